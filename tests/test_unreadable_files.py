"""Bad files among your own images cost their own result, never the run's.

`ssvp predict` and `ssvp eval` of a `folder` dataset meet a corrupt file (random bytes named .png), a truncated PNG
(a valid one cut in half), an empty file and a text file named .jpg among good images:
* every good image gets the result it gets in a run on the good images alone (scores, labels, thresholds, metrics;
  at a tolerance, since the batches hold other images);
* each bad file is listed with its reason: predictions.csv `status`, the top of the gallery, the summary line; for
  eval the printed list, a `left_out` column of the metrics CSV and NAME.unreadable.csv;
* the exit status is 1 (finished, files left out), distinct from 2 (a user error, nothing done); `--strict` stops at
  the first bad file with exit 2, as before;
* calibration uses the readable normal images and refuses a normal folder in which none is readable.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssvp_core.cli import main
from ssvp_core.config import load_config
from ssvp_core.data.registry import reads_as_folder
from ssvp_core.engine.predict import predict_folder
from ssvp_core.errors import DataError
from ssvp_core.methods import build_detector
from test_own_data import make_folder

# name -> the reason every listing gives; the names sort before the good images, and in this order
BAD = {"bad_1_corrupt.png": "not an image: unrecognised content", "bad_2_truncated.png": "truncated PNG",
       "bad_3_empty.png": "empty file", "bad_4_text.jpg": "not an image: a text file"}
# scores are written with 6 decimals; the same image in another batch agrees to float32 rounding (~1e-7) besides
CSV_TOLERANCE = 2e-6


def add_bad_files(folder: Path, donor_png: Path, names=tuple(BAD)) -> None:
    writers = {"bad_1_corrupt.png": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
               "bad_2_truncated.png": lambda p: p.write_bytes(donor_png.read_bytes()[: donor_png.stat().st_size // 2]),
               "bad_3_empty.png": lambda p: p.write_bytes(b""),
               "bad_4_text.jpg": lambda p: p.write_text("inspection notes: part 17 looked fine\n")}
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        writers[name](folder / name)


@pytest.fixture
def folders(synth_root, tmp_path) -> dict[str, Path]:
    """good/: images to check; check/: the same plus the four bad files and a notes.txt; normals/ and
    normals_bad/ (the same normal images plus a truncated and an empty one)."""
    cls = synth_root / "synth-b" / "mesh" / "test"
    out = {k: tmp_path / k for k in ("good", "check", "normals", "normals_bad")}
    for p in sorted(cls.glob("*/*.png"))[:6]:
        for k in ("good", "check"):
            out[k].mkdir(exist_ok=True)
            shutil.copy(p, out[k] / f"{p.parent.name}_{p.name}")
    for p in sorted((cls / "good").glob("*.png")):
        for k in ("normals", "normals_bad"):
            out[k].mkdir(exist_ok=True)
            shutil.copy(p, out[k] / p.name)
    donor = sorted(out["good"].iterdir())[0]
    add_bad_files(out["check"], donor)
    (out["check"] / "notes.txt").write_text("not an image name: listed as ignored, never read\n")
    add_bad_files(out["normals_bad"], donor, ("bad_2_truncated.png", "bad_3_empty.png"))
    return out


PREDICT = ["--method", "reference", "--quantile", "0.9", "--set", "eval.batch_size=4"]  # batch 1 = the 4 bad files


def test_predict_writes_every_readable_result_and_lists_the_rest(folders, tmp_path, capsys):
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["predict", str(folders["good"]), "--normal-dir", str(folders["normals"]), "--out", str(ref),
                 *PREDICT]) == 0
    capsys.readouterr()
    assert main(["predict", str(folders["check"]), "--normal-dir", str(folders["normals_bad"]), "--out", str(out),
                 *PREDICT]) == 1
    printed = capsys.readouterr()
    assert printed.out.strip().endswith("index.html")
    good = sorted(p.name for p in folders["good"].iterdir())
    listed = ", ".join(f"{name} ({reason})" for name, reason in BAD.items())
    summary = printed.err.strip()
    assert len(summary.splitlines()) == 1
    assert (f"4 of {len(good) + 4} files could not be read: {listed}; results for the other {len(good)} are in {out}"
            in summary)
    assert ("2 normal images could not be read and were left out of the calibration: bad_2_truncated.png (truncated "
            "PNG), bad_3_empty.png (empty file)") in summary
    assert "1 file without an image name was not read: notes.txt" in summary

    pred = pd.read_csv(out / "predictions.csv").assign(name=lambda f: f.file.map(lambda s: Path(s).name))
    assert list(pred.name) == sorted([*good, *BAD, "notes.txt"])  # every file of the folder, in name order
    status = dict(zip(pred.name, pred.status))
    assert {n: status[n] for n in BAD} == {n: f"unreadable: {r}" for n, r in BAD.items()}
    assert status["notes.txt"] == "ignored: not an image file name"
    assert pred[pred.name.isin(good)].status.eq("ok").all()
    assert pred[~pred.name.isin(good)].score.isna().all()

    # the good images' results are those of the run on the good images alone
    alone = pd.read_csv(ref / "predictions.csv").assign(name=lambda f: f.file.map(lambda s: Path(s).name))
    ok = pred[pred.status == "ok"].set_index("name").loc[alone.name]
    assert ok.score.tolist() == pytest.approx(alone.score.tolist(), abs=CSV_TOLERANCE)
    assert ok.label.tolist() == alone.label.tolist() and ok.anomalous_pixels.tolist() == alone.anomalous_pixels.tolist()
    for col in ("image", "heatmap", "mask"):
        assert all((out / f).is_file() for f in ok[col])
    calib, calib_alone = (json.loads((d / "calibration.json").read_text()) for d in (out, ref))
    assert calib["normal_images"] == calib_alone["normal_images"] == len(list(folders["normals"].iterdir()))
    for key in ("image_threshold", "pixel_threshold"):
        assert calib[key] == pytest.approx(calib_alone[key], rel=1e-6)
    assert [(Path(u["file"]).name, u["reason"]) for u in calib["unreadable_normal_images"]] == [
        ("bad_2_truncated.png", "truncated PNG"), ("bad_3_empty.png", "empty file")]

    page = (out / "index.html").read_text()
    top = page[page.index("<section class='unreadable'"):page.index("<table id='results'>")]
    assert "4 of 10 files could not be read" in top and "left out of the calibration" in top and "notes.txt" in top
    for name, reason in BAD.items():
        assert f"<td>{name}</td><td>{reason}</td>" in top
    assert page.count("<tr class=") == len(good)


def test_predict_strict_stops_at_the_first_bad_file(folders, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(folders["check"]), "--out", str(out), "--strict", *PREDICT]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folders['check'] / 'bad_1_corrupt.png'}: cannot decode image")
    assert "Traceback" not in err and not (out / "predictions.csv").exists()


def test_without_normal_dir_bad_files_are_listed_too(folders, tmp_path):
    cfg = load_config("smoke", "reference", ["eval.batch_size=3"])
    run = predict_folder(build_detector(cfg), cfg, folders["check"], tmp_path / "out")
    assert not run.complete and run.images == 10 and [str(u) for u in run.unreadable] == [
        f"{n} ({r})" for n, r in BAD.items()]
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert "label" not in pred and (pred.status == "ok").sum() == 6


def test_calibration_refuses_a_normal_folder_with_no_readable_image(folders, tmp_path, capsys):
    normals = tmp_path / "all_bad"
    add_bad_files(normals, sorted(folders["good"].iterdir())[0])
    out = tmp_path / "out"
    assert main(["predict", str(folders["good"]), "--normal-dir", str(normals), "--out", str(out), *PREDICT]) == 2
    err = capsys.readouterr().err
    assert f"{normals}: none of its 4 normal images could be read (bad_1_corrupt.png" in err
    assert "Replace them with intact copies, pass another --normal-dir" in err and "Traceback" not in err
    assert not (out / "predictions.csv").exists()
    text_only = tmp_path / "text_only"
    text_only.mkdir()
    (text_only / "readme.txt").write_text("x")
    cfg = load_config("smoke", "reference")
    with pytest.raises(DataError, match="no images .* found \\(only files without an image name: readme.txt\\)"):
        predict_folder(build_detector(cfg), cfg, folders["good"], out, normal_dir=text_only)


# ---- eval of a folder dataset -------------------------------------------------------------------------------
def _damage(root: Path) -> dict[str, str]:
    """Damage a folder dataset in place: relative path -> the reason listed."""
    abnormal = sorted((root / "abnormal").iterdir())
    normal = sorted((root / "normal").iterdir())
    cut = abnormal[0].read_bytes()
    abnormal[0].write_bytes(cut[: len(cut) // 2])
    normal[0].write_bytes(b"")
    mask = root / "masks" / abnormal[1].name
    mask.write_bytes(mask.read_bytes()[: mask.stat().st_size // 2])
    (root / "normal" / "zz_notes.jpg").write_text("a text file named as an image\n")
    return {f"abnormal/{abnormal[0].name}": "truncated PNG", f"normal/{normal[0].name}": "empty file",
            f"abnormal/{abnormal[1].name}": f"its mask {mask.name}: truncated PNG",
            "normal/zz_notes.jpg": "not an image: a text file"}


def test_eval_of_a_folder_leaves_out_unreadable_images_and_says_which(synth_root, tmp_path, capsys):
    damaged = make_folder(synth_root, tmp_path / "parts")
    bad = _damage(damaged)
    clean = make_folder(synth_root, tmp_path / "clean" / "parts")  # the same product without the damaged images
    for rel in bad:
        for path in (clean / rel, clean / "masks" / Path(rel).name):
            path.unlink(missing_ok=True)
    common = ["eval", "--method", "reference", "--profile", "smoke", "--quiet"]
    assert main([*common, "--eval-on", f"parts={clean}", "--out", str(tmp_path / "clean.csv")]) == 0
    capsys.readouterr()
    out = tmp_path / "parts.csv"
    # two loader workers: the unreadable items cross process boundaries
    assert main([*common, "--eval-on", f"parts={damaged}", "--out", str(out), "--set", "eval.num_workers=2"]) == 1
    printed = capsys.readouterr()
    n_images = len(list((damaged / "normal").iterdir())) + len(list((damaged / "abnormal").iterdir()))
    assert f"parts: 4 of {n_images} images could not be read and are left out of the metrics above:" in printed.out
    for rel, reason in bad.items():
        kind = "anomalous" if rel.startswith("abnormal") else "normal"
        assert f"  {rel} (parts, {kind}): {reason}" in printed.out
    assert "4 unreadable image(s) left out of the metrics" in printed.err and "--strict" in printed.err

    table, alone = pd.read_csv(out), pd.read_csv(tmp_path / "clean.csv")
    assert (table.left_out == 4).all()  # one class: its rows and the mean each lack 4 images
    merged = table.merge(alone, on=["cls", "metric"], suffixes=("", "_alone"))
    assert len(merged) == len(alone) and {"pixel_auroc", "image_auroc"} <= set(merged.metric)
    # the same images scored in other batches: metrics agree to float32 rounding of the maps and scores
    assert merged.value.tolist() == pytest.approx(merged.value_alone.tolist(), abs=1e-5)
    listed = pd.read_csv(tmp_path / "parts.unreadable.csv")
    assert {str(Path(f).relative_to(damaged)): r for f, r in zip(listed.file, listed.reason)} == bad
    assert set(listed.columns) == {"dataset", "cls", "file", "label", "reason"}

    assert main([*common, "--eval-on", f"parts={damaged}", "--strict"]) == 2
    assert "cannot decode" in capsys.readouterr().err


def test_only_your_own_folders_are_read_tolerantly(synth_root, tmp_path):
    """Benchmarks stop at a damaged file (a broken download: numbers without it would not compare with the
    papers'); a folder dataset, under `folder` or any name of yours, is read tolerantly."""
    root = make_folder(synth_root, tmp_path / "parts", masks=False)
    assert reads_as_folder("folder", root) and reads_as_folder("parts", root)
    assert not reads_as_folder("mvtec", root)  # a benchmark name always means its own reader
    assert not reads_as_folder("synth-b", synth_root / "synth-b")
    (root / "meta.json").write_text("{}")
    assert not reads_as_folder("parts", root)  # an AnomalyCLIP-style index is read as such


def test_a_product_with_no_readable_image_gets_no_metrics_and_a_dataset_with_none_is_refused(synth_root, tmp_path,
                                                                                                capsys):
    line = tmp_path / "line"
    make_folder(synth_root, line / "cap_a", masks=False)
    broken = make_folder(synth_root, line / "cap_b", masks=False)
    for image in [*broken.glob("normal/*"), *broken.glob("abnormal/*")]:
        image.write_bytes(b"")
    n_broken = len(list(broken.glob("*/*")))
    common = ["eval", "--method", "reference", "--profile", "smoke", "--quiet"]
    out = tmp_path / "line.csv"
    assert main([*common, "--eval-on", f"line={line}", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "line: no metrics for cap_b: none of its images could be read" in printed
    table = pd.read_csv(out)
    assert set(table.cls) == {"cap_a", "mean"} and (table.n_classes == 1).all()
    assert table.set_index(["cls", "metric"]).left_out.to_dict() == {
        **{("cap_a", m): 0 for m in set(table.metric)}, **{("mean", m): n_broken for m in set(table.metric)}}
    assert main([*common, "--eval-on", f"caps={broken}"]) == 2
    assert f"none of its {n_broken} images could be read" in capsys.readouterr().err
