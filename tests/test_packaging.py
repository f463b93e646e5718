"""Packaging: pyproject.toml's ranges and environment.yml's pins agree, and `pip install .` gives a working `ssvp`.

The install test cannot download anything (no network in CI time for a multi-GB torch), so it builds a fresh venv
whose only way to see the dependencies is a .pth line pointing at this interpreter's site-packages, and installs a
copy of the source with `pip --isolated install --no-index --no-build-isolation ".[notebooks,dev,cluster]"`. With --no-index
and --isolated (no configured find-links folder either) pip can use nothing but the distributions already installed, so the install succeeds only if every declared range (extras
included) accepts the installed pinned version; the package, its data files and its console script are then used
from outside the repository. What it does not prove: that PyPI resolves the ranges in an empty environment, or that
versions older than the pins (the lower bounds are the pins) would work.
"""
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from pip_requirements import pip_requirements  # noqa: E402


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _declared() -> dict[str, Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(meta["project"]["dependencies"])
    for extra in meta["project"].get("optional-dependencies", {}).values():
        reqs += extra
    reqs += meta["build-system"]["requires"]
    return {_name(r.name): r for r in map(Requirement, reqs)}


def _pins() -> dict[str, Version]:
    pins = {}
    for line in pip_requirements((ROOT / "environment.yml").read_text()):
        name, _, version = line.partition("==")
        assert version, f"environment.yml pins exact versions; {line!r} is not a pin"
        pins[_name(name)] = Version(version)
    return pins


def test_environment_pins_lie_inside_the_declared_ranges():
    declared, pins = _declared(), _pins()
    assert set(declared) == set(pins), f"only in pyproject: {set(declared) - set(pins)}; only in environment.yml: {set(pins) - set(declared)}"
    outside = {n: (str(pins[n]), str(declared[n].specifier)) for n in pins if not declared[n].specifier.contains(pins[n])}
    assert not outside
    unbounded = [n for n, r in declared.items() if n != "setuptools" and not any(s.operator == "<" for s in r.specifier)]
    assert not unbounded  # every runtime range has an upper bound


def test_torch_ranges_keep_the_tested_minor_series():
    declared, pins = _declared(), _pins()
    for name in ("torch", "torchvision"):
        spec, pin = declared[name].specifier, pins[name]
        assert spec.contains(pin)
        next_minor = Version(f"{pin.major}.{pin.minor + 1}.0")
        previous_minor = Version(f"{pin.major}.{pin.minor - 1}.99")
        assert not spec.contains(next_minor) and not spec.contains(previous_minor)


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_gives_a_working_ssvp(tmp_path):
    import shutil

    source = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info beside the sources
    source.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / item, source / item)
    shutil.copytree(ROOT / "ssvp_core", source / "ssvp_core", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "ssvp_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    # --isolated: no pip configuration or PIP_* variable (a find-links folder of wheels) may offer other versions
    install = subprocess.run([python, "-m", "pip", "--isolated", "install", "--no-index", "--no-build-isolation",
                              f"{source}[notebooks,dev,cluster]"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    where = subprocess.check_output([python, "-c", "import ssvp_core; print(ssvp_core.__file__)"], cwd=tmp_path, env=env,
                                    text=True).strip()
    assert Path(where).is_relative_to(site)  # the installed copy, not the repository
    ssvp = venv / "bin" / "ssvp"
    helped = subprocess.run([ssvp, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "reproduce" in helped.stdout and "predict" in helped.stdout
    out = tmp_path / "synth"
    made = subprocess.run([ssvp, "data", "synth", str(out), "--size", "32", "--n-test-good", "1", "--n-per-defect", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    assert (out / "synth-a").is_dir() and (out / "synth-b").is_dir()
    checked = subprocess.run([ssvp, "data", "verify", "synth-b", str(out / "synth-b")], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    # package data (presets, model configs, the paper's numbers) came along
    data = subprocess.run([python, "-c", "from ssvp_core.config import load_config; from ssvp_core.reports.reported import reported; "
                           "load_config('smoke', 'ssvp'); load_config('paper', 'ssvp'); print(len(reported('SSVP')))"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert data.returncode == 0 and int(data.stdout.strip()) > 0, data.stderr[-2000:]
