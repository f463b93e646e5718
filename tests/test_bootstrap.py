"""Bootstrap intervals and the paired test (ssvp_core/metrics/bootstrap.py).

Every resampled metric is checked against an explicit loop that materializes each resample (np.repeat of the drawn
images) and calls the plain metrics; the interval and the p-value against cases whose answer is known in advance.
"""
import math

import numpy as np
import pytest

from ssvp_core.metrics.bootstrap import (ResampledRanking, bootstrap_class, dataset_resamples, paired_p_value,
                                         percentile_interval, resample_counts)
from ssvp_core.metrics.pixel import pixel_metrics
from ssvp_core.metrics.ranking import ranking_metrics


def _maps(seed=0, n=7, size=12, ties=False):
    rng = np.random.default_rng(seed)
    maps = rng.random((n, size, size)).astype(np.float32)
    if ties:  # heavy ties across images and between positives and negatives
        maps = (np.round(maps * 6) / 6).astype(np.float32)
    masks = np.zeros((n, size, size), bool)
    for i in range(0, n, 2):  # every other image anomalous, with one or two regions
        masks[i, 2:5, 3:7] = True
        if i % 4 == 0:
            masks[i, 8:11, 8:10] = True
        maps[i][masks[i]] += 0.3
    return maps, masks


def test_resample_counts_are_stratified_seeded_and_method_independent():
    labels = np.array([0, 0, 0, 1, 1, 0, 1])
    c = resample_counts(labels, 50, seed=3, key="synth-b/mesh")
    assert c.shape == (7, 50)
    assert (c[labels == 0].sum(0) == 4).all() and (c[labels == 1].sum(0) == 3).all()
    assert np.array_equal(c, resample_counts(labels, 50, seed=3, key="synth-b/mesh"))
    assert not np.array_equal(c, resample_counts(labels, 50, seed=3, key="synth-b/twill"))


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_pixel_metrics_equal_the_metrics_of_the_materialized_resample(ties):
    maps, masks = _maps(ties=ties)
    labels = masks.reshape(len(masks), -1).any(1)
    weights = resample_counts(labels, 6, seed=1, key="x")
    weights[:, 0] = 1  # the original data set itself
    weights[:, 1] = 0
    weights[[0, 1], 1] = [3, 2]  # one anomalous image thrice, one normal twice, the rest left out
    got = ResampledRanking(maps, masks, regions=True).metrics(weights)
    for b in range(weights.shape[1]):
        reps = weights[:, b].astype(int)
        expected = pixel_metrics(np.repeat(maps, reps, axis=0), np.repeat(masks, reps, axis=0))
        for ours, theirs in (("auroc", "auroc"), ("ap", "ap"), ("f1_max", "f1_max"), ("aupro", "aupro"),
                             ("aupro_legacy", "aupro_legacy")):
            assert got[ours][b] == pytest.approx(expected[theirs], rel=1e-9, abs=1e-12), (ours, b)


def test_weighted_image_metrics_equal_the_metrics_of_the_materialized_resample():
    rng = np.random.default_rng(4)
    scores = np.round(rng.random(30), 1)  # ties
    labels = rng.random(30) < 0.4
    weights = resample_counts(labels, 40, seed=0, key="k")
    got = ResampledRanking(scores, labels).metrics(weights, legacy_aupro=False)
    for b in range(40):
        reps = weights[:, b].astype(int)
        expected = ranking_metrics(np.repeat(scores, reps), np.repeat(labels, reps))
        for k in ("auroc", "ap", "f1_max"):
            assert got[k][b] == pytest.approx(expected[k], rel=1e-12), (k, b)


def test_chunked_evaluation_matches_one_chunk(monkeypatch):
    from ssvp_core.metrics import bootstrap

    maps, masks = _maps(seed=2, n=9, size=16)
    weights = resample_counts(masks.reshape(9, -1).any(1), 20, seed=0, key="c")
    whole = ResampledRanking(maps, masks, regions=True).metrics(weights, legacy_aupro=False)
    monkeypatch.setattr(bootstrap, "_CHUNK_ELEMENTS", 7)  # a few positive runs per chunk
    chunked = ResampledRanking(maps, masks, regions=True).metrics(weights, legacy_aupro=False)
    for k in whole:
        np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-12)


def test_constant_scores_give_a_degenerate_interval_at_one_half():
    labels = np.array([0] * 6 + [1] * 4)
    weights = resample_counts(labels, 200, seed=0, key="const")
    out = bootstrap_class(np.full(10, 0.7), labels, weights=weights)
    assert (out["image_auroc"] == 0.5).all()
    assert percentile_interval(out["image_auroc"]) == (0.5, 0.5)
    np.testing.assert_allclose(out["image_ap"], 0.4, rtol=1e-6)  # the stratified resample keeps the anomaly share


def test_percentile_interval_matches_an_explicit_brute_force_bootstrap_of_the_class_mean():
    """Two classes; the dataset mean per resample recomputed by a loop that draws nothing itself (it materializes
    the same multiplicities), then the 2.5/97.5 percentiles by sorting and linear interpolation written out."""
    rng = np.random.default_rng(7)
    data = {c: (rng.random(12), np.array([0] * 7 + [1] * 5)) for c in ("a", "b")}
    per_class, brute = {}, []
    B = 300
    weights = {c: resample_counts(y, B, seed=5, key=f"d/{c}") for c, (s, y) in data.items()}
    for c, (s, y) in data.items():
        per_class[c] = bootstrap_class(s, y, weights=weights[c])
    for b in range(B):
        means = []
        for c, (s, y) in data.items():
            reps = weights[c][:, b].astype(int)
            means.append(ranking_metrics(np.repeat(s, reps), np.repeat(y, reps))["auroc"])
        brute.append(np.mean(means))
    resampled = dataset_resamples(per_class, "image_auroc")
    np.testing.assert_allclose(resampled, brute, rtol=1e-6)
    ordered = np.sort(np.asarray(brute))

    def quantile(q):  # numpy's default (linear) definition, spelt out
        pos = q * (len(ordered) - 1)
        lo = int(math.floor(pos))
        return ordered[lo] + (pos - lo) * (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo])

    lo, hi = percentile_interval(resampled)
    assert lo == pytest.approx(quantile(0.025), rel=1e-6) and hi == pytest.approx(quantile(0.975), rel=1e-6)


def test_paired_p_value_known_cases():
    a = np.linspace(0.6, 0.9, 99)
    assert paired_p_value(a, a) == 1.0  # identical methods: every difference is 0
    assert paired_p_value(a + 0.1, a) == pytest.approx(2 / 100)  # always better: the smallest p 99 resamples allow
    d = np.array([-1.0] * 10 + [1.0] * 89)
    assert paired_p_value(d, np.zeros(99)) == pytest.approx(2 * 11 / 100)


def test_paired_resamples_detect_a_real_difference_and_not_a_null_one():
    """Same draws for both methods: a method separating the classes beats one at chance (p small); two methods with
    scores from the same distribution do not (p large)."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 40)
    weights = resample_counts(labels, 500, seed=0, key="d/c")
    good = bootstrap_class(labels + rng.normal(0, 0.5, 80), labels, weights=weights)["image_auroc"]
    chance = bootstrap_class(rng.random(80), labels, weights=weights)["image_auroc"]
    chance2 = bootstrap_class(rng.random(80), labels, weights=weights)["image_auroc"]
    assert paired_p_value(good, chance) < 0.01
    assert paired_p_value(chance, chance2) > 0.05


def test_bootstrap_class_names_match_the_evaluation_metrics():
    maps, masks = _maps()
    labels = masks.reshape(len(masks), -1).any(1)
    out = bootstrap_class(maps.reshape(len(maps), -1).max(1), labels, maps, masks, resample_counts(labels, 3, 0, "n"))
    assert set(out) == {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
                        "pixel_aupro", "pixel_aupro_legacy"}


def test_evaluation_cache_gains_resamples_once_and_keeps_them(synth_root, tmp_path, monkeypatch):
    """A cached evaluation without resamples is redone once when a table asks for intervals; afterwards every caller
    gets the stored one with them (no third evaluation)."""
    import yaml

    from ssvp_core.config import load_preset
    from ssvp_core.engine import infer
    from ssvp_core.reports import EvalJob, Model, Study, tables

    preset = load_preset("smoke")
    preset.pop("synthetic")
    preset.update(profile="cache-test", out_dir=str(tmp_path / "runs"),
                  datasets={"synth-a": str(synth_root / "synth-a"), "synth-b": str(synth_root / "synth-b")})
    preset["eval"]["bootstrap"] = 50
    path = tmp_path / "cache-test.yaml"
    path.write_text(yaml.safe_dump(preset))
    calls = []
    real = infer.evaluate
    monkeypatch.setattr(infer, "evaluate", lambda *a, **k: calls.append(k.get("bootstrap")) or real(*a, **k))
    study = Study(str(path), workspace=tmp_path)
    plain = study.evaluation(EvalJob(Model("reference", "synth-b")))
    assert "bootstrap" not in plain.extra
    with_ci = study.evaluation(EvalJob(Model("reference", "synth-b"), bootstrap=True))
    again = study.evaluation(EvalJob(Model("reference", "synth-b")))
    assert calls == [False, True]
    assert again.extra["bootstrap"]["resamples"] == 50
    lo, hi = tables.interval(again, "pixel_auroc").values()
    assert lo <= 100 * with_ci.mean("pixel_auroc") <= hi
    pd_equal = plain.metrics.value.to_numpy()
    np.testing.assert_allclose(with_ci.metrics.value.to_numpy(), pd_equal)  # the point estimates do not move
