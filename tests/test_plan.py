"""`ssvp plan` and the in-process `ssvp run-plan`: the jobs the pages read, deduplicated, with their dependencies,
state and cost; running them leaves nothing for the pages to compute. (The Ray executor: tests/test_cluster.py.)"""
from __future__ import annotations

import math
import sys

import pytest

from ssvp_core.cli import main
from ssvp_core.errors import SSVPError
from ssvp_core.reports.catalog import PAGES
from ssvp_core.reports.costs import FlopCount, Throughput, cost_key, count_flops, describe_backbones, read_counts
from ssvp_core.reports.experiments import EvalJob, Model, Study
from ssvp_core.reports.plan import build_plan, eval_id, expected_classes, train_id


def _counts(study: Study, methods=("ssvp", "winclip", "dapo")) -> dict[str, FlopCount]:
    """Round made-up counts, so that the expected costs below can be written out by hand."""
    out = {}
    for method in methods:
        cfg = study.config(Model(method, study.main_target))
        out[cost_key(cfg)] = FlopCount("smoke", method, cost_key(cfg), eval_per_image=2.0, eval_per_class=10.0,
                                       frozen_per_image=1.0 if method == "ssvp" else 0.0, step_per_image=3.0,
                                       step_per_class=5.0, cacheable=method == "ssvp", backbones="tiny")
    return out


def test_the_plan_lists_each_training_once_with_the_pages_and_labels_that_read_it(workspace):
    study = Study("smoke")
    plan = build_plan(study, ["table1", "table3", "table4", "tsne"], counts={})
    trainings = [j for j in plan.jobs if j.kind == "train"]
    assert len({j.id for j in plan.jobs}) == len(plan.jobs)
    # Table 1's SSVP is Table 3's model E for the first seed only if the seeds agree: find it by fingerprint
    ssvp = next(j for j in trainings if j.id == train_id(study, Model("ssvp", study.main_target)))
    assert ssvp.pages[0] == "table1"
    # Table 4's and the t-SNE page's models are the same two trainings, listed once with both pages
    shared = [j for j in trainings if set(j.pages) == {"table4", "tsne"}]
    assert len(shared) == 1 and set(shared[0].labels) == {"baseline", "Baseline"}
    assert any(j.id == ssvp.id and "tsne" in j.pages for j in trainings)
    # every model the pages name has exactly one training job (training-free WinCLIP has none)
    models = {train_id(study, (i.model if isinstance(i, EvalJob) else i)) for page in plan.pages
              for i in PAGES[page].jobs(study) if (i.model if isinstance(i, EvalJob) else i).method != "winclip"}
    assert models == {j.id for j in trainings}
    # trainings come first; each evaluation needs its model's training, WinCLIP's needs nothing
    order = [j.id for j in plan.jobs]
    for job in plan.jobs:
        assert all(order.index(n) < order.index(job.id) for n in job.needs)
        if job.kind == "evaluate":
            assert job.needs == (() if job.method == "winclip" else (train_id(study, job.model),))


def test_a_bootstrap_evaluation_serves_the_page_that_needs_none(workspace):
    study = Study("smoke")
    plan = build_plan(study, ["table3", "table1"], counts={})  # Table 3 asks E without resamples, Table 1 with
    shared = plan.job(eval_id(study, EvalJob(Model("ssvp", study.main_target))))
    assert shared.evaluation.bootstrap and set(shared.pages) == {"table3", "table1"}
    assert eval_id(study, EvalJob(Model("ssvp", study.main_target), bootstrap=True)) == shared.id


def test_the_cost_of_each_job_follows_the_counts_sizes_and_schedule(workspace):
    study = Study("smoke", overrides=["train.epochs=3"])
    study.ensure_data()
    plan = build_plan(study, ["tsne", "dapo", "table2"], counts=_counts(study))
    n, classes = 90, 5  # synth-a (training) and synth-b (target) both: 5 classes, 90 test images (smoke.yaml)

    def per_epoch(job):
        batch = study.config(job.model).train.batch_size
        return n * 3.0 + math.ceil(n / batch) * classes * (1 - (1 - 1 / classes) ** batch) * 5.0

    first, second = [j for j in plan.jobs if j.kind == "train" and j.method == "ssvp" and "tsne" in j.pages]
    # SSVP's frozen features are cached: the first training computes them, the second reads them
    assert first.images == n and first.epochs == 3
    assert first.gflops == pytest.approx(n * 1.0 + 3 * per_epoch(first))
    assert second.gflops == pytest.approx(3 * per_epoch(second)) and "frozen features cached by " + first.id in second.notes
    dapo = next(j for j in plan.jobs if j.kind == "train" and j.method == "dapo")  # not cacheable: no frozen pass
    assert dapo.gflops == pytest.approx(3 * per_epoch(dapo))
    winclip = next(j for j in plan.jobs if j.kind == "evaluate" and j.method == "winclip")
    eval_batch = study.config(winclip.model).eval.batch_size
    assert winclip.gflops == pytest.approx(n * 2.0 + (math.ceil(n / eval_batch) + classes - 1) * 10.0)
    # GPU-hours: an A100 at 40% of its fp32 peak (smoke's backbones run in fp32)
    assert first.gpu_hours == pytest.approx(first.gflops / (19.5 * 0.4 * 1e3) / 3600)
    # methods without a count are listed without an estimate, and the totals say so
    anomalyclip = next(j for j in plan.jobs if j.method == "anomalyclip")
    assert anomalyclip.gpu_hours is None and "no FLOP count for anomalyclip" in anomalyclip.notes[0]
    assert anomalyclip.id in plan.totals()["unestimated"]
    assert expected_classes(1, 8) == 1 and expected_classes(5, 1) == pytest.approx(1.0)


def test_a_step_counted_training_costs_its_steps_not_its_epochs(workspace):
    """AnomalyVFM's release counts optimiser steps (`train.steps`): the cost is steps x batch images, whatever
    `train.epochs` says."""
    study = Study("smoke", overrides=["train.epochs=3", "train.steps=7"])
    study.ensure_data()
    plan = build_plan(study, ["dapo"], counts=_counts(study))
    dapo = next(j for j in plan.jobs if j.kind == "train")
    n, classes, batch = 90, 5, study.config(dapo.model).train.batch_size
    per_epoch = n * 3.0 + math.ceil(n / batch) * classes * (1 - (1 - 1 / classes) ** batch) * 5.0
    assert dapo.epochs == pytest.approx(7 * batch / n)
    assert dapo.gflops == pytest.approx(7 * batch / n * per_epoch)
    assert f"7 steps of {batch} images" in dapo.notes[0]


def test_the_per_method_table_adds_up_to_the_jobs(workspace, capsys):
    study = Study("smoke", overrides=["train.epochs=3"])
    study.ensure_data()
    plan = build_plan(study, ["tsne", "dapo", "table2"], counts=_counts(study))
    table = plan.by_method().set_index("method")
    ssvp_jobs = [j for j in plan.jobs if j.method == "ssvp"]
    assert table.loc["ssvp", "trainings"] == sum(j.kind == "train" for j in ssvp_jobs)
    assert table.loc["ssvp", "GPU-h train"] == pytest.approx(sum(j.gpu_hours for j in ssvp_jobs if j.kind == "train"))
    assert table.loc["ssvp", "TFLOP"] == pytest.approx(sum(j.gflops for j in ssvp_jobs) / 1e3)
    unestimated = [j for j in plan.jobs if j.gpu_hours is None]
    assert table.loc["total", "no estimate"] == len(unestimated) > 0  # anomalyclip & co have no made-up count
    assert table.loc["total", "GPU-h train"] + table.loc["total", "GPU-h evaluate"] == pytest.approx(
        plan.totals()["gpu_hours"])
    assert main(["plan", "--profile", "smoke", "--only", "dapo", "--by-method"]) == 0
    out = capsys.readouterr().out
    assert "| dapo " in out and "| total " in out and "eval/dapo/" not in out  # one row per method, no job rows


def test_a_measured_gpu_table_replaces_the_assumed_rate(workspace):
    table = workspace / "gpu.md"
    table.write_text("Device: NVIDIA H200\n\n| method | batch | ms/img | peak memory (MiB) |\n|---|---|---|---|\n"
                     "| ssvp | 8 | 4.0 | 5120 |\n")
    throughput = Throughput.from_gpu_table(table)
    # ssvp's count says 2 GFLOP per evaluated image; measured 4 ms per image: 0.5 TFLOP/s sustained
    assert throughput.tflops("ssvp", "bf16", 2.0) == (pytest.approx(0.5), "measured (NVIDIA H200)")
    assert throughput.tflops("dapo", "fp16", 2.0)[0] == pytest.approx(312 * 0.4)  # not in the table
    study = Study("smoke")
    study.ensure_data()
    plan = build_plan(study, ["tsne"], throughput=throughput, counts=_counts(study))
    assert all(j.peak_memory_mb == 5120 for j in plan.jobs)
    assert "rates measured on NVIDIA H200" in plan.render()


def test_the_paper_plan_estimates_every_job_from_the_stored_counts(workspace):
    """The shipped counts cover every configuration of the paper's pages; datasets not on disk are sized by the
    published numbers, except those the table does not know (listed without an estimate)."""
    plan = build_plan(Study("paper"))
    trainings = [j for j in plan.jobs if j.kind == "train"]
    assert all(j.gflops and j.gflops > 0 for j in trainings if not j.notes or "unknown" not in j.notes[0])
    assert not [n for j in plan.jobs for n in j.notes if "no FLOP count" in n]
    ssvp = next(j for j in trainings if j.id == train_id(plan.study, Model("ssvp", "mvtec")))
    assert ssvp.images == 2162 and ssvp.epochs == plan.study.config(ssvp.model).train.epochs  # VisA's test split
    assert plan.totals()["gpu_hours"] > 1


def test_a_method_that_chooses_its_backbone_by_option_is_counted_per_backbone():
    """VisualAD builds CLIP or a DINOv2 ViT by `options.backbone`: two shapes, two counts, each named by its tower."""
    study = Study("smoke")
    on_clip = study.config(Model("visualad", "synth-b"))
    on_dino = study.config(Model("visualad", "synth-b", extra=("options.backbone=dinov2",)))
    assert cost_key(on_clip) != cost_key(on_dino)
    assert describe_backbones(on_clip) == f"{on_clip.backbone.clip.model}@{on_clip.backbone.clip.image_size}"
    assert describe_backbones(on_dino) == f"{on_dino.backbone.dino.model}@{on_dino.backbone.dino.image_size}"


def test_the_cost_tables_are_not_page_inputs(tmp_path, monkeypatch):
    """A new FLOP count or dataset size (read by `ssvp plan` alone) re-runs no notebook; any other data file does."""
    from ssvp_core.reports import runner

    package = tmp_path / "ssvp_core"
    (package / "reports" / "data").mkdir(parents=True)
    (package / "reports" / "data" / "costs.csv").write_text("a\n")
    (package / "reports" / "data" / "reported.csv").write_text("b\n")
    monkeypatch.setattr(runner, "PACKAGE", package)
    before = runner.sources_digest()
    (package / "reports" / "data" / "costs.csv").write_text("changed\n")
    (package / "reports" / "data" / "dataset_sizes.csv").write_text("new\n")
    assert runner.sources_digest() == before
    (package / "reports" / "data" / "reported.csv").write_text("changed\n")
    assert runner.sources_digest() != before


@pytest.mark.slow
def test_the_stored_smoke_counts_are_what_counting_gives_now():
    """The shipped table is not stale: counting SSVP's and DAPO's smoke models again gives the stored numbers
    (FLOP counts depend on shapes only)."""
    stored = read_counts()
    for method in ("ssvp", "dapo", "visualad", "anomalyvfm"):
        fresh = count_flops("smoke", method)
        assert stored[fresh.cost_key] == fresh


def test_run_plan_in_process_trains_and_evaluates_once_and_then_finds_everything_done(workspace, capsys):
    args = ["run-plan", "--profile", "smoke", "--only", "dapo", "--set", "train.epochs=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[1/2] train/dapo/" in out and ": trained in" in out and "[2/2] eval/dapo/" in out and "evaluated" in out
    assert "ssvp reproduce --profile smoke --only dapo --set train.epochs=1" in out
    study = Study("smoke", overrides=["train.epochs=1"])
    plan = build_plan(study, ["dapo"], counts={})
    assert all(j.done for j in plan.jobs)
    assert main(args) == 0
    assert "0 of 2 job(s) to run" in capsys.readouterr().out
    assert main(["plan", "--profile", "smoke", "--only", "dapo", "--set", "train.epochs=1"]) == 0
    assert "1 trainings (1 done), 1 evaluations (1 done)" in capsys.readouterr().out


def test_a_failed_training_skips_its_evaluation_and_the_others_go_on(workspace, monkeypatch, capsys):
    from ssvp_core.engine import train as engine

    real = engine.train

    def failing(cfg, *a, **k):
        if cfg.method == "dapo":
            raise SSVPError("dapo's data is broken (test)")
        return real(cfg, *a, **k)

    monkeypatch.setattr(engine, "train", failing)
    assert main(["run-plan", "--profile", "smoke", "--only", "dapo", "table4", "--set", "train.epochs=1"]) == 1
    captured = capsys.readouterr()
    assert "failed" in captured.out and "dapo's data is broken (test)" in captured.out
    assert "skipped" in captured.out and "which failed" in captured.out
    assert captured.out.count(": trained in") == 2  # Table 4's two models
    assert "failed or were skipped" in captured.err


def test_the_ray_executor_without_ray_says_how_to_install_it(workspace, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["run-plan", "--profile", "smoke", "--only", "tsne", "--executor", "ray"]) == 2
    assert "pip install 'ssvp[cluster]'" in capsys.readouterr().err


def test_an_unknown_page_is_named(workspace, capsys):
    assert main(["plan", "--profile", "smoke", "--only", "table9"]) == 2
    assert "unknown page(s) ['table9']" in capsys.readouterr().err
