"""The synthetic benchmark (determinism, exact masks, not solvable by a global colour threshold) and
`ssvp data verify` on a deliberately damaged copy."""
import hashlib

import numpy as np
from PIL import Image

from ssvp_core.cli import main
from ssvp_core.data import read_dataset
from ssvp_core.data.loader import AnomalyDataset
from ssvp_core.data.synthetic import SETS, generate
from ssvp_core.metrics import ranking_metrics


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    kw = dict(size=48, n_train_good=1, n_test_good=1, n_per_defect=1, sets=("synth-a",))
    generate(tmp_path / "a", seed=5, **kw)
    generate(tmp_path / "b", seed=5, **kw)
    generate(tmp_path / "c", seed=6, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_classes_and_disjoint_sets(synth_root):
    a = read_dataset("synth-a", synth_root / "synth-a")
    b = read_dataset("synth-b", synth_root / "synth-b")
    assert {s.cls for s in a} == {c.name for c in SETS["synth-a"]}
    assert not {s.cls for s in a} & {s.cls for s in b}
    for set_name in ("synth-a", "synth-b"):
        assert {c.kind for c in SETS[set_name]} == {"texture", "object"}
    defects = {s.defect for s in a + b if s.label}
    assert len(defects) >= 5
    for s in a + b:
        if s.label:
            m = np.asarray(Image.open(s.mask))
            assert set(np.unique(m)) == {0, 255}  # exact binary masks, never empty


def test_defects_are_not_found_by_a_global_colour_threshold(synth_root):
    for name in ("synth-a", "synth-b"):
        ds = AnomalyDataset(read_dataset(name, synth_root / name), 96)
        images = np.stack([ds[i]["image"].numpy() for i in range(len(ds))])
        masks = np.stack([ds[i]["mask"].numpy() for i in range(len(ds))]) > 0.5
        for channel in (images[:, 0], images[:, 1], images[:, 2], images.mean(1)):
            for signed in (channel, -channel):  # dark and bright thresholds
                m = ranking_metrics(signed, masks)
                assert m["auroc"] < 0.8, (name, m)
                assert m["f1_max"] < 0.3, (name, m)


def test_verify_names_every_planted_problem(synth_copy, capsys):
    root = synth_copy / "synth-a"
    cls = SETS["synth-a"][0]
    d0, d1 = cls.defects[0], cls.defects[1]
    missing = root / cls.name / "ground_truth" / d0 / "000_mask.png"
    missing.unlink()
    orphan = root / cls.name / "ground_truth" / d0 / "099_mask.png"
    Image.new("L", (96, 96)).save(orphan)
    truncated = root / cls.name / "test" / "good" / "001.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    resized = root / cls.name / "ground_truth" / d1 / "000_mask.png"
    Image.open(resized).resize((80, 80)).save(resized)
    grey = root / cls.name / "ground_truth" / d1 / "001_mask.png"
    arr = np.asarray(Image.open(grey)).copy()
    arr[arr > 0] = 200
    arr[0, :3] = [60, 90, 120]
    Image.fromarray(arr).save(grey)
    empty_cls = root / "emptyclass" / "test" / "good"
    empty_cls.mkdir(parents=True)

    assert main(["data", "verify", "synth-a", str(root)]) == 1
    out = capsys.readouterr().out
    for kind, path in [("missing-mask", root / cls.name / "test" / d0 / "000.png"), ("orphan-mask", orphan),
                       ("truncated-image", truncated), ("size-mismatch", resized), ("non-binary-mask", grey),
                       ("empty-class", root / "emptyclass" / "test")]:
        assert f"[{kind}] {path}" in out, (kind, out)


def test_verify_clean_dataset_passes(synth_root, capsys):
    assert main(["data", "verify", "synth-b", str(synth_root / "synth-b"), "--split", "test", "--split", "train"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_ensure_synthetic_regenerates_only_when_settings_change(tmp_path):
    from ssvp_core.synthdata import STAMP, ensure_synthetic

    kw = dict(seed=1, size=48, n_train_good=1, n_test_good=1, n_per_defect=1)
    roots = ensure_synthetic(tmp_path / "synth", **kw)
    first = (roots["synth-a"] / "meta.json").stat().st_mtime_ns
    ensure_synthetic(tmp_path / "synth", **kw)
    assert (roots["synth-a"] / "meta.json").stat().st_mtime_ns == first  # same settings: kept
    (tmp_path / "synth" / STAMP).write_text('{"generator": 0}')  # e.g. an older generator version
    ensure_synthetic(tmp_path / "synth", **kw)
    assert (roots["synth-a"] / "meta.json").stat().st_mtime_ns != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no temporary folders left behind
