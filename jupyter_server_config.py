# Jupyter reads this file when JupyterLab starts in the repository's root folder (`make lab` does): a notebook of
# notebooks/ is saved without its outputs, so running it never shows up in `git status`. Its outputs are kept in
# its page under reports/<profile>/<notebook>/ (README "Reproducing the paper").
from ssvp_core.reports.notebook import strip_outputs_on_save

c.FileContentsManager.pre_save_hook = strip_outputs_on_save  # noqa: F821 - `c` is the config Jupyter passes in
