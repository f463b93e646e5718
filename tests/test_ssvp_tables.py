"""SSVP's report helpers: Table 3's baseline settings (row A shares rows B-E's schedule) and Table 4's alignment
measures (Eqs. 23-24) on synthetic tensors with hand-computed values."""
import math

import pytest
import torch

from ssvp_core.config import load_config
from ssvp_core.errors import ConfigError
from ssvp_core.reports import Model, Study, analysis, tables


# ---- Table 3: row A ----------------------------------------------------------------------------------------------
def _row_a_config(baseline, overrides=()):
    study = Study("paper", overrides=overrides)
    shared = tables.baseline_overrides(study, "mvtec", baseline)
    return study.config(Model("bayes_pfl", "mvtec", shared)), shared


def test_row_a_shares_the_schedule_and_sigma_of_rows_b_to_e():
    """SSVP §4.2: "all models employ the same training configuration parameters, with the epoch set to 15 and the
    batch size set to 8"; the test-time smoothing is the same for every row as well."""
    cfg, shared = _row_a_config("shared_schedule")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.eval.sigma) == (15, 8, 4.0)
    ssvp = Study("paper").config(Model("ssvp", "mvtec"))
    for key in ("optimizer", "betas", "weight_decay", "schedule", "warmup_frac"):
        assert getattr(cfg.train, key) == getattr(ssvp.train, key), key
    released = load_config("paper", "bayes_pfl")
    # what makes Bayes-PFL Bayes-PFL stays its own: learning rates, options, backbone settings
    assert (cfg.train.lr_prompt, cfg.train.lr_head) == (released.train.lr_prompt, released.train.lr_head)
    assert cfg.options == released.options and cfg.backbone == released.backbone
    assert not any(s.startswith("backbone.") or ".lr" in s for s in shared)


def test_row_a_backbone_and_released_switches():
    cfg, _ = _row_a_config("shared_schedule_and_backbone")
    ssvp = Study("paper").config(Model("ssvp", "mvtec"))
    assert cfg.backbone.clip.activation == ssvp.backbone.clip.activation
    assert cfg.backbone.precision == ssvp.backbone.precision and cfg.train.epochs == 15
    cfg, shared = _row_a_config("released")
    released = load_config("paper", "bayes_pfl")
    assert shared == () and (cfg.train.epochs, cfg.train.batch_size, cfg.eval.sigma) == (
        released.train.epochs, released.train.batch_size, released.eval.sigma)
    with pytest.raises(ConfigError, match="baseline"):
        tables.baseline_overrides(Study("paper"), "mvtec", "same")


def test_caller_overrides_still_win_for_row_a():
    cfg, _ = _row_a_config("shared_schedule", ("train.epochs=1", "eval.sigma=0"))
    assert cfg.train.epochs == 1 and cfg.eval.sigma == 0.0 and cfg.train.batch_size == 8


def test_table3_trains_row_a_with_the_shared_settings(monkeypatch):
    study = Study("paper")
    seen = {}

    def fake_evaluation(job, progress=False, recompute=False):
        seen.setdefault(job.model.label, study.config(job.model))

        class Result:
            @staticmethod
            def mean(metric):
                return 0.5

        return Result()

    monkeypatch.setattr(study, "evaluation", fake_evaluation)
    jobs = tables.table3_jobs(study, "mvtec", [111])
    assert [(j.model.label, j.method) for j in jobs] == [("A", "bayes_pfl"), ("B", "ssvp"), ("C", "ssvp"), ("D", "ssvp"),
                                                        ("E", "ssvp")]
    frame = tables.table3(study, jobs)
    row_a = seen["A"]
    assert (row_a.train.epochs, row_a.train.batch_size, row_a.eval.sigma) == (15, 8, 4.0)
    assert "train.epochs=15" in frame[frame.model == "A"].switches.iloc[0]


# ---- Table 4: Eqs. 23-24 -----------------------------------------------------------------------------------------
def test_tir_fg_upsamples_the_layer_cosines_and_averages_over_anomalous_pixels():
    """2x2 -> 3x3 bilinear with align_corners: corners kept, edge midpoints = pair means, centre = mean of four."""
    a, b, c, d = 0.1, 0.5, -0.3, 0.9
    layers = torch.tensor([[a, b], [c, d]])
    cos_maps = torch.stack([layers, 2 * layers, 3 * layers, 10 * layers])[None]  # (1, L=4, 2, 2)
    mask = torch.zeros(1, 3, 3)
    mask[0, 0, 1] = mask[0, 1, 1] = mask[0, 2, 2] = 1  # top edge midpoint, centre, bottom-right corner
    fg = lambda s: s * ((a + b) / 2 + (a + b + c + d) / 4 + d)  # noqa: E731
    total, count = analysis.tir_fg_sums(cos_maps, mask, "mean")
    assert count == 3 and math.isclose(total, fg(4.0), rel_tol=1e-6)  # mean of 1, 2, 3, 10 = 4
    assert math.isclose(analysis.tir_fg_sums(cos_maps, mask, "last")[0], fg(10.0), rel_tol=1e-6)
    assert math.isclose(analysis.tir_fg_sums(cos_maps, mask, 1)[0], fg(2.0), rel_tol=1e-6)
    with pytest.raises(ConfigError, match="tir_layers"):
        analysis.tir_fg_sums(cos_maps, mask, 4)


def test_scd_is_the_distance_between_normalised_state_means():
    """Eq. 24: || t_final - t_static ||_2 with t_final the normalised mean of a state's three prompts."""
    t = torch.zeros(1, 6, 3)
    t[0, :3, 0] = 1  # normal prompts along e1
    t[0, 3:, 0], t[0, 3:, 1] = 1, torch.tensor([1.0, 1.0, 1.0])  # abnormal prompts along (e1 + e2)
    t_n, t_a = analysis.state_prototypes(t, 3)
    assert torch.allclose(t_n, torch.tensor([[1.0, 0.0, 0.0]])) and torch.allclose(t_a, torch.tensor([[1.0, 1.0, 0.0]]) / math.sqrt(2))
    static = torch.tensor([[0.0, 1.0, 0.0]])
    assert math.isclose(analysis.scd(t_n, static).item(), math.sqrt(2), rel_tol=1e-6)
    assert math.isclose(analysis.scd(t_a, static).item(), math.sqrt((1 / math.sqrt(2)) ** 2 + (1 - 1 / math.sqrt(2)) ** 2), rel_tol=1e-6)


def test_alignment_switches_on_an_untrained_model(synth_root, monkeypatch):
    """t_static = t_init gives SCD = 0 for the identity baseline (its T_final is T_init); the handcrafted prompt
    does not; the layer choice moves TIR-FG."""
    from ssvp_core.data import read_dataset
    from ssvp_core.methods import build_detector

    study = Study("smoke")
    monkeypatch.setattr(study, "detector", lambda model, progress=False: build_detector(study.config(model)).eval())
    monkeypatch.setattr(study, "samples", lambda name: read_dataset(name, synth_root / name)[::4])  # a quarter: speed
    identity = Model("ssvp", "synth-b", tables.IDENTITY_BASELINE)
    static_init = analysis.alignment(study, identity, t_static="t_init")
    assert static_init["scd_normal"] < 1e-5 and static_init["scd_abnormal"] < 1e-5
    handcrafted = analysis.alignment(study, identity)
    assert handcrafted["scd_normal"] > 1e-2 and handcrafted["tir_fg"] == static_init["tir_fg"]
    assert analysis.alignment(study, identity, tir_layers="last")["tir_fg"] != handcrafted["tir_fg"]
    with pytest.raises(ConfigError, match="t_static"):
        analysis.alignment(study, identity, t_static="prompt")
