# `make lab` starts JupyterLab with this file (`jupyter lab --config=jupyter_server_config.py notebooks/`; pass the
# same option to open the notebooks with another JupyterLab), so that running the notebooks leaves notebooks/ as git
# has it: a notebook of notebooks/ is saved without its outputs (they are kept
# in its page under reports/<profile>/<notebook>/), and JupyterLab's checkpoints go to the workspace's
# .ipynb_checkpoints/ instead of notebooks/.ipynb_checkpoints/ (README "Reproducing the paper").
from ssvp_core.reports.notebook import strip_outputs_on_save
from ssvp_core.workspace import find

c.FileContentsManager.pre_save_hook = strip_outputs_on_save  # noqa: F821 - `c` is the config Jupyter passes in
c.FileCheckpoints.checkpoint_dir = str(find().root / ".ipynb_checkpoints")  # noqa: F821
