import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import shutil
from pathlib import Path

import pytest

from ssvp_core.data.synthetic import generate


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic benchmark (both class sets), shared read-only by the tests."""
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, size=96, n_train_good=2, n_test_good=4, n_per_defect=2)
    return root


@pytest.fixture
def synth_copy(synth_root, tmp_path) -> Path:
    """A private copy a test may damage."""
    dst = tmp_path / "synth"
    shutil.copytree(synth_root, dst)
    return dst
