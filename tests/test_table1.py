"""Table 1 with the methods published after SSVP (VisualAD, AnomalyVFM): their own published numbers in the paper
column, what trained each model here and what trained the published one, no delta where those differ, and the
summary naming both. Evaluations are stubbed: the assembly is what is tested, against reported.csv's values."""
import math

import pandas as pd

from ssvp_core.reports import Study, pages, tables
from ssvp_core.reports.efficiency import DEFAULT_METHODS


class _Evaluation:
    """A cached evaluation whose every class mean is `value` (no bootstrap resamples)."""

    extra = None

    def __init__(self, value):
        self.value = value

    def mean(self, metric):
        return self.value


def _table1(study, monkeypatch, datasets, methods):
    monkeypatch.setattr(study, "evaluation", lambda job, progress=False, recompute=False: _Evaluation(0.9))
    return tables.table1(study, tables.table1_jobs(study, datasets, methods))


def _cell(frame, dataset, method, metric):
    return frame[(frame.dataset == dataset) & (frame.method == method) & (frame.metric == metric)].iloc[0]


def test_both_methods_are_table1_methods_and_on_the_efficiency_page():
    for method in ("visualad", "anomalyvfm"):
        assert method in tables.TABLE1_METHODS and method in DEFAULT_METHODS
    assert tables.TABLE1_METHODS[-1] == "ssvp"  # SSVP stays the last row, as in its paper


def test_the_efficiency_page_measures_both(tmp_path):
    """Parameters and FLOPs of one forward pass, each in its own process (VisualAD feeds its trainable anchors to a
    module, which torch's FLOP counter refused until the measured pass ran without gradients)."""
    from ssvp_core.config import load_config
    from ssvp_core.methods import build_detector
    from ssvp_core.reports.efficiency import measure

    frame = measure("smoke", ["visualad", "anomalyvfm"], repeats=1).set_index("method")
    for method in ("visualad", "anomalyvfm"):
        detector = build_detector(load_config("smoke", method))
        trainable = sum(p.numel() for p in detector.parameters() if p.requires_grad)
        assert round(frame.loc[method, "trainable_params_M"] * 1e6) == trainable > 0
        assert round(frame.loc[method, "total_params_M"] * 1e6) == sum(p.numel() for p in detector.parameters())
        assert frame.loc[method, "gflops"] > 0 and frame.loc[method, "latency_ms"] > 0


def test_what_trained_the_published_numbers():
    """paper.yaml: VisualAD's checkpoints trained on VisA (MVTec-AD for VisA); AnomalyVFM's on synthetic data."""
    assert Study.published_trained_on("visualad", "mvtec") == "visa"
    assert Study.published_trained_on("visualad", "visa") == "mvtec"
    assert Study.published_trained_on("anomalyvfm", "mvtec").startswith("synthetic")
    assert Study.published_trained_on("ssvp", "btad") == "visa"
    assert Study.published_trained_on("winclip", "mvtec").startswith("none")


def test_paper_profile_table1_shows_their_published_numbers(monkeypatch):
    frame = _table1(Study("paper"), monkeypatch, ["mvtec", "visa"], ["winclip", "visualad", "anomalyvfm", "ssvp"])
    # VisualAD README, CLIP column: MVTec-AD 92.2 / 93.2 / 96.7 image AUROC / F1-max / AP; VisA pixel PRO 91.0
    visualad = _cell(frame, "mvtec", "visualad", "image_auroc")
    assert visualad.paper == 92.2 and visualad.trained_on == visualad.paper_trained_on == "visa"
    assert math.isclose(visualad.delta, 90.0 - 92.2)
    assert _cell(frame, "visa", "visualad", "pixel_aupro_legacy").paper == 91.0
    # AnomalyVFM's DINOv3 results (the paper profile's backbone): 93.5 / 89.4 image AUROC on MVTec-AD / VisA,
    # from models trained on synthetic data: the kit's VisA-trained model gets no delta against them
    for dataset, published in (("mvtec", 93.5), ("visa", 89.4)):
        cell = _cell(frame, dataset, "anomalyvfm", "image_auroc")
        assert round(cell.paper, 1) == published and math.isnan(cell.delta)
        assert cell.paper_trained_on.startswith("synthetic") and cell.trained_on in ("visa", "mvtec")
    # SSVP's own Table 1 still fills the other rows
    assert _cell(frame, "mvtec", "ssvp", "image_auroc").paper == 93.0
    assert _cell(frame, "mvtec", "winclip", "image_auroc").trained_on.startswith("none")


def test_the_published_variant_follows_the_profile(monkeypatch):
    """`options.vfm=radio` reads RADIO's results (96.4 on MVTec-AD), `options.backbone=dinov2` VisualAD's DINOv2
    column (90.1)."""
    study = Study("paper", overrides=["options.vfm=radio"])
    assert round(_cell(_table1(study, monkeypatch, ["mvtec"], ["anomalyvfm"]), "mvtec", "anomalyvfm",
                       "image_auroc").paper, 1) == 96.4
    study = Study("paper", overrides=["options.backbone=dinov2"])
    assert _cell(_table1(study, monkeypatch, ["mvtec"], ["visualad"]), "mvtec", "visualad", "image_auroc").paper == 90.1


def test_smoke_table1_rows_and_summary_name_what_trained_them(monkeypatch):
    """In smoke every trained model learns on synth-a; the paper column is MVTec-AD's, trained on VisA (VisualAD) or
    synthetic data (AnomalyVFM): the summary says both."""
    study = Study("smoke")
    frame = _table1(study, monkeypatch, None, None)
    assert list(dict.fromkeys(frame.method)) == tables.TABLE1_METHODS
    rows = frame[frame.method.isin(["visualad", "anomalyvfm"])].drop_duplicates("method").set_index("method")
    assert (rows.trained_on == "synth-a").all()
    assert rows.paper_trained_on["visualad"] == "visa" and rows.paper_trained_on["anomalyvfm"].startswith("synthetic")
    shown = tables.wide(frame, ["dataset", "method", "trained_on", "paper_trained_on"], tables.IMAGE_METRICS)
    assert {"visualad", "anomalyvfm"} <= set(shown.index.get_level_values("method"))
    html = pages.summary_fragment(frame)
    assert "<th>trained on</th>" in html
    assert "<td>anomalyvfm</td><td>synth-a <small>(paper: synthetic" in html
    assert "<td>visualad</td><td>synth-a <small>(paper: visa)</small></td>" in html


def test_protocol_table_counts_anomalyvfm_in_steps():
    frame = Study("rehearsal").protocol_table(tables.table1_jobs(Study("rehearsal"), ["mvtec"], ["anomalyvfm", "ssvp"]))
    epochs = frame.set_index("method")["epochs"]
    assert epochs["anomalyvfm"] == "2 steps" and epochs["ssvp"] != "2 steps"
    assert pd.api.types.is_scalar(epochs["ssvp"])


def test_protocol_table_names_the_backbone_the_options_choose():
    """VisualAD builds CLIP (or DINOv2 with options.backbone=dinov2), AnomalyVFM the backbone of options.vfm."""
    def backbones(method, *overrides):
        study = Study("smoke", overrides=overrides)
        row = study.protocol_table(tables.table1_jobs(study, None, [method])).iloc[0]
        return row["CLIP"] != "—", row["auxiliary backbone"] != "—"

    assert backbones("visualad") == (True, False) and backbones("anomalyvfm") == (False, True)
    assert backbones("visualad", "options.backbone=dinov2") == (False, True)
    assert backbones("anomalyvfm", "options.vfm=clip") == (True, False)
