"""Paper-reported numbers (as data with their source), the study a notebook runs (profile, workspace, protocol,
cached training and evaluation), tables, figures, the HTML site and the notebook runner."""

SMOKE_BANNER = ("SMOKE PROFILE: tiny random backbones and synthetic data. These numbers check that the pipeline runs; "
                "they say nothing about how good any method is.")

from .experiments import EvalJob, Model, Study  # noqa: E402

__all__ = ["Study", "Model", "EvalJob", "SMOKE_BANNER"]
