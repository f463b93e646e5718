"""CLI error handling and atomic writes."""
import json

import pytest

from ssvp_core import io
from ssvp_core.cli import main


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    assert main(["data", "summary", "mvtec", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset root") and "Traceback" not in err


def test_summary_and_meta_export(synth_root, tmp_path, capsys):
    assert main(["data", "summary", "synth-b", str(synth_root / "synth-b")]) == 0
    assert "capsule" in capsys.readouterr().out
    out = tmp_path / "meta.json"
    assert main(["data", "meta", "synth-b", str(synth_root / "synth-b"), "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["test"]) == {"twill", "granite", "mesh", "capsule", "bracket"}
    assert main(["data", "meta", "synth-b", str(synth_root / "synth-b"), "--out", str(out)]) == 2  # never overwrite silently


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "report.json"
    io.write_json(target, {"good": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert json.loads(target.read_text()) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.parametrize("method, key, value, choices", [
    ("anomalyclip", "options.layers", "every", "published, nominal"),
    ("vip2clip", "options.normal_word", "bad", "good, damaged"),
    ("ssvp", "train.optimizer", "sgd", "adam, adamw"),
])
def test_invalid_choice_is_refused_before_any_work(tmp_path, capsys, method, key, value, choices):
    """A misspelt choice fails at config load (exit 2, no traceback), naming the key, the value and the choices,
    for every method through the same Literal-typed fields, and nothing is written to the run folder."""
    assert main(["train", "--method", method, "--profile", "smoke", "--quiet",
                 "--set", f"out_dir={tmp_path}", "--set", f"{key}={value}"]) == 2
    err = capsys.readouterr().err
    assert key.split(".")[1] in err and repr(value) in err and choices in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
