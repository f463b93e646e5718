"""The smoke plan on a real local Ray cluster (a head and two worker nodes, each its own raylet, on this machine):
one worker process is killed in the middle of a training, Ray retries the task, the training resumes from its
mid-epoch checkpoint, and the plan ends with the parameters and metrics of an uninterrupted in-process run; then
`ssvp reproduce` renders both pages from those runs without training or evaluating anything, with the tables (and
Figure 6's prompt embeddings) of the in-process workspace.

Both runs use one thread per job (SSVP_THREADS=1), the same kernels on the same machine; parameters and metrics are
still compared with float32 tolerances, not bitwise. Every Ray process of the test is started in a process group of
its own and killed by that group's id at the end, and the test checks that none is left.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

import pandas as pd  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
PAGES = ["tsne", "dapo"]  # three trainings (the t-SNE page's two SSVP models, DAPO) and DAPO's multi-type evaluation
SETTINGS = ["train.epochs=1", "train.checkpoint_every=1"]  # a checkpoint after every step: something to resume from


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", SSVP_THREADS="1", TQDM_DISABLE="1",
               RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


def _group_members(pgids: set[int]) -> list[int]:
    """Live processes (not zombies) whose process group is one of `pgids`."""
    alive = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            alive.append(int(Path(stat).parent.name))
    return alive


class LocalRayCluster:
    """`ray start` for a head (no CPUs: it schedules nothing) and `workers` nodes of one CPU each, on 127.0.0.1."""

    def __init__(self, workers: int = 2):
        self.temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
        self.port = _free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.pgids: set[int] = set()
        self.workers = workers

    def alive_nodes(self, timeout: float = 120) -> int:
        """How many nodes the cluster's GCS lists as alive, asked by a driver of its own (-1: it did not answer)."""
        probe = ("import ray; ray.init(address=%r, log_to_driver=False, include_dashboard=False); "
                 "print(sum(n['Alive'] for n in ray.nodes()))" % self.address)
        try:
            out = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            return -1
        lines = out.stdout.strip().splitlines()
        return int(lines[-1]) if out.returncode == 0 and lines and lines[-1].isdigit() else -1

    def _registered_late(self, nodes: int, wait: float = 120) -> bool:
        """`ray start` gives its raylet a fixed 30 s (ray/_private/node.py) to appear in the GCS and then exits 1,
        leaving the raylet running; on a loaded machine it registers a little later and serves like any node."""
        deadline = time.time() + wait
        while time.time() < deadline:
            if self.alive_nodes() >= nodes:
                return True
            time.sleep(5)
        return False

    def _start(self, *args: str, nodes: int) -> None:
        """One `ray start`, for a cluster of `nodes` alive nodes once it has started. Ray waits a fixed 30 s for the
        new raylet to register, which a loaded 2-core machine does not always meet: a try that timed out is given
        two more minutes to register before what it left running is killed and the start tried again (three tries)."""
        for attempt in range(3):
            grpc, listen, metrics, runtime_env = _free_ports(4)
            command = [str(RAY), "start", "--node-ip-address=127.0.0.1", "--num-gpus=0", "--disable-usage-stats",
                       f"--dashboard-agent-grpc-port={grpc}", f"--dashboard-agent-listen-port={listen}",
                       f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                       "--object-store-memory=100000000", *args]
            proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)  # its pid is the group id of every process it starts
            self.pgids.add(proc.pid)
            out, _ = proc.communicate(timeout=300)
            if proc.returncode == 0 or ("timed out during startup" in out and self._registered_late(nodes)):
                return
            self._kill({proc.pid})
        raise AssertionError(f"`ray start {' '.join(args)}` failed three times:\n{out[-3000:]}")

    def start(self) -> None:
        self._start("--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
                    f"--temp-dir={self.temp}", nodes=1)
        for worker in range(self.workers):  # one after the other: agents starting side by side are slower
            self._start(f"--address={self.address}", "--num-cpus=1", nodes=2 + worker)
        assert self.alive_nodes() == 1 + self.workers

    @staticmethod
    def _kill(pgids: set[int]) -> list[int]:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in pgids:
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 10
            while _group_members(pgids) and time.time() < deadline:
                time.sleep(0.2)
            if not _group_members(pgids):
                break
        return _group_members(pgids)

    def stop(self) -> list[int]:
        """Kill every process the cluster started (by group id); returns those still alive after that (none)."""
        import shutil

        left = self._kill(self.pgids)
        shutil.rmtree(self.temp, ignore_errors=True)
        return left


@pytest.fixture
def ray_cluster():
    """A cluster the test starts when it needs it (not while the in-process reference runs), always stopped."""
    cluster = LocalRayCluster(workers=2)
    try:
        yield cluster
    finally:
        left = cluster.stop()
        assert not left, f"Ray processes left running: {left}"


def _ssvp(workspace: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ssvp_core.cli", "--workspace", str(workspace), *args]


def _run_plan_args() -> list[str]:
    args = ["run-plan", "--profile", "smoke", "--only", *PAGES]
    for s in SETTINGS:
        args += ["--set", s]
    return args


def _kill_a_training_in_the_middle(workspace: Path, proc: subprocess.Popen, timeout: float = 900) -> dict:
    """Wait until some training has written a checkpoint and is still running, then SIGKILL its worker process."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for record_path in glob.glob(str(workspace / "runs/smoke/plan-runs/*/train__*/*.json")):
            try:
                record = json.loads(Path(record_path).read_text())
            except (OSError, ValueError):
                continue  # being replaced
            _, method, fingerprint = record["job"].split("/")
            checkpoint = workspace / "runs/smoke" / method / fingerprint / "checkpoint.pt"
            if "finished" not in record and checkpoint.is_file():
                os.kill(record["pid"], signal.SIGKILL)
                return record
        time.sleep(0.02)
    raise AssertionError(f"no training was seen between its first checkpoint and its end: {proc.communicate()}")


def _results(workspace: Path) -> tuple[dict, dict]:
    """The trainable parameters of every checkpoint and the metrics of every stored evaluation, by name."""
    import pickle

    params, metrics = {}, {}
    for path in (workspace / "runs/smoke").glob("*/*/checkpoint.pt"):
        payload = torch.load(path, map_location="cpu", weights_only=False)
        assert payload["state"]["complete"], path
        params[path.parent.relative_to(workspace)] = payload["trainable"]
    for path in (workspace / "runs/smoke").glob("*/*/eval/*.pkl"):
        with path.open("rb") as f:
            metrics[path.relative_to(workspace)] = pickle.load(f).metrics
    return params, metrics


def _assert_same_results(a: Path, b: Path) -> None:
    params_a, metrics_a = _results(a)
    params_b, metrics_b = _results(b)
    assert sorted(params_a) == sorted(params_b) and len(params_a) == 3
    assert sorted(metrics_a) == sorted(metrics_b) and len(metrics_a) == 1
    for name, state in params_a.items():
        assert state.keys() == params_b[name].keys()
        for key, value in state.items():
            other = params_b[name][key]
            # an epoch of Adam at float32: a few hundred roundings of 6e-8 each, relative to the tensor's scale
            scale = max(float(value.abs().max()), 1e-3)
            assert torch.allclose(value, other, rtol=0, atol=1e-4 * scale), (name, key)
    for name, frame in metrics_a.items():
        other = metrics_b[name]
        assert frame[["cls", "metric"]].equals(other[["cls", "metric"]])
        assert (frame.value - other.value).abs().max() < 1e-4 or frame.value.equals(other.value), name


def _assert_same_figure6_inputs(a: Path, b: Path) -> None:
    """The t-SNE page's input in both workspaces: each model's normalised prompt embeddings per test image (the
    figure itself, a t-SNE layout, amplifies last-bit differences and is not compared)."""
    from ssvp_core.reports import Study, analysis, tables

    embeddings = {}
    for workspace in (a, b):
        study = Study("smoke", workspace, [SETTINGS[0]], device="cpu")
        embeddings[workspace] = [analysis.prompt_embeddings(study, model) for model in tables.tsne_models(study)]
    for (vectors_a, labels_a), (vectors_b, labels_b) in zip(embeddings[a], embeddings[b]):
        assert labels_a == labels_b and len(labels_a) > 0
        # unit vectors from float32 forwards of parameters equal to 1e-4 of their scale
        assert abs(vectors_a - vectors_b).max() < 1e-4


def _snapshot(workspace: Path) -> dict:
    """Every file of the runs (checkpoints, evaluations, feature caches) with its size and modification time; not the
    run folders' empty lock files, which a page that finds its model trained still takes to read it."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (workspace / "runs").rglob("*")
            if p.is_file() and "plan-runs" not in p.parts and p.name != ".lock"}


def test_the_smoke_plan_survives_a_killed_worker_on_a_local_ray_cluster(ray_cluster, tmp_path):
    reference, clustered = tmp_path / "in-process", tmp_path / "ray"
    started = time.time()
    local = subprocess.run(_ssvp(reference, *_run_plan_args()), env=_env(), capture_output=True, text=True,
                           timeout=1800, cwd=tmp_path)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    local_seconds = time.time() - started

    ray_cluster.start()
    cluster_seconds = time.time() - started - local_seconds
    proc = subprocess.Popen(_ssvp(clustered, *_run_plan_args(), "--executor", "ray", "--address", ray_cluster.address),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    killed = _kill_a_training_in_the_middle(clustered, proc)
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out[-5000:]

    summary = json.loads(next((clustered / "runs/smoke/plan-runs").glob("*/summary.json")).read_text())
    rows = {row["job"]: row for row in summary["jobs"]}
    assert summary["executor"] == "ray" and all(r["status"] in ("trained", "evaluated") for r in rows.values()), rows
    assert rows[killed["job"]]["attempts"] == 2  # the killed one and the retry
    assert all(r["attempts"] == 1 for job, r in rows.items() if job != killed["job"])
    tries = [json.loads(p.read_text()) for p in (clustered / "runs/smoke/plan-runs").glob("*/*/*.json")]
    assert len({t["node"] for t in tries if "node" in t}) == 2, tries  # both worker nodes ran jobs (the head has no CPU)
    assert f"{killed['job']}: trained" in out and "after 2 attempts" in out  # the progress line of the retried job

    # the retry resumed (did not restart): its history keeps the killed attempt's steps, whose timer then restarts
    _, method, fingerprint = killed["job"].split("/")
    history = torch.load(clustered / "runs/smoke" / method / fingerprint / "checkpoint.pt", map_location="cpu",
                         weights_only=False)["state"]["history"]
    assert [r["step"] for r in history] == list(range(1, len(history) + 1))
    elapsed = [r["elapsed_s"] for r in history]
    assert any(b < a for a, b in zip(elapsed, elapsed[1:])), "the retried training started again from scratch"

    _assert_same_results(reference, clustered)

    # `ssvp reproduce` renders both pages from the cluster's runs without training or evaluating anything: no file
    # under runs/ changes; DAPO's tables equal those rendered from the in-process runs, and Figure 6's input (the
    # prompt embeddings its t-SNE lays out) is the same in both workspaces
    before = _snapshot(clustered)
    reports = {}
    for workspace in (clustered, reference):
        run = subprocess.run(_ssvp(workspace, "reproduce", "--profile", "smoke", "--only", *PAGES, "--set",
                                   SETTINGS[0]), env=_env(), capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        status = json.loads((workspace / "reports/smoke/status.json").read_text())
        assert all(status[page]["status"] == "ok" for page in PAGES), status
        reports[workspace] = {p.name: pd.read_csv(p) for p in (workspace / "reports/smoke/dapo").glob("*.csv")}
    assert _snapshot(clustered) == before
    assert reports[clustered].keys() == reports[reference].keys() and reports[clustered]
    for name, frame in reports[clustered].items():
        other = reports[reference][name]
        numeric = frame.select_dtypes("number").columns
        pd.testing.assert_frame_equal(frame.drop(columns=numeric), other.drop(columns=numeric))
        pd.testing.assert_frame_equal(frame[numeric], other[numeric], rtol=0, atol=1e-4)
    _assert_same_figure6_inputs(clustered, reference)
    print(f"in-process plan {local_seconds:.0f} s, Ray cluster started in {cluster_seconds:.0f} s, "
          f"whole test {time.time() - started:.0f} s")
