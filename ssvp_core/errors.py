"""The exception family for problems a user can cause and fix.

Every message names the file (or setting) at fault and says how to fix it. The CLI prints these without a
traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""


class SSVPError(Exception):
    """Base class: a problem the user can fix."""


class DataError(SSVPError):
    """A dataset on disk is missing, malformed or inconsistent."""


class UnreadableFile(DataError):
    """An image or mask file that cannot be opened or decoded. `path` is the file, `reason` a few words on why
    ("truncated PNG", "empty file", "not an image: a text file"), for lists of the files a run left out."""

    def __init__(self, message: str, path=None, reason: str = ""):
        super().__init__(message)  # one positional argument, so DataLoader workers can re-raise it
        self.path = path
        self.reason = reason or message


class LayoutError(DataError):
    """A dataset root does not have the layout its reader expects."""


class WeightsError(SSVPError):
    """Backbone weights cannot be found or loaded."""


class ConfigError(SSVPError):
    """A configuration value or combination is invalid."""


class CheckpointError(SSVPError):
    """A checkpoint is missing, corrupt or belongs to another configuration."""


class TrainingDiverged(SSVPError):
    """The loss became non-finite during training."""


class MetricUndefinedWarning(UserWarning):
    """A metric is undefined for a class (e.g. no anomalous samples) and was set to NaN."""
