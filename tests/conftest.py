import os
import shutil
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
# Every path a preset names (data/, runs/, reports/) resolves in this throwaway workspace unless a test sets its own:
# the tests never write into the repository's workspace.
DEFAULT_WORKSPACE = Path(tempfile.mkdtemp(prefix="ssvp-tests-workspace-"))
os.environ["SSVP_WORKSPACE"] = str(DEFAULT_WORKSPACE)

import pytest
import torch

from ssvp_core.data.synthetic import generate


@pytest.fixture(scope="session", autouse=True)
def _remove_default_workspace():
    yield
    shutil.rmtree(DEFAULT_WORKSPACE, ignore_errors=True)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A private, empty workspace for one test (SSVP_WORKSPACE points at it)."""
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.setenv("SSVP_WORKSPACE", str(root))
    return root


def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests in reverse order (make test-portability): a test that passes only "
                          "after, or only before, another one depends on state it does not set up itself")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse"):
        items.reverse()


@pytest.fixture(autouse=True)
def fixed_global_seed():
    """Every test starts from the same global RNG state, so what it draws (prompt contexts, random inits, DataLoader
    seeds) does not depend on which tests ran before it or in what order; CI once failed a margin that passed locally
    for exactly that reason."""
    torch.manual_seed(0)


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


@pytest.fixture(scope="session")
def learning_roots(tmp_path_factory) -> tuple[Path, Path]:
    """The learning tests' data: a benchmark to train on (generator seed 0) and a second draw of the same classes
    (generator seed 1) whose images no training run sees."""
    from learning import generate_learning_data

    return (generate_learning_data(tmp_path_factory.mktemp("learn"), seed=0),
            generate_learning_data(tmp_path_factory.mktemp("learn-held-out"), seed=1))
