"""Running a plan (`ssvp run-plan`): in this process, or as Ray tasks on a multi-GPU server or a cluster.

Both executors run the same function per job (`run_job`): it opens the study in the workspace it is given (never
one it finds on its own: a Ray worker may start anywhere), then trains through `Study.train` (the engine's run
folder lock, atomic checkpoints, resume from `checkpoint.pt`) or evaluates through `Study.evaluation` (the result
stored atomically). What each attempt did is written beside the run (`runs/<profile>/plan-runs/<run>/`), so the
summary says where each job ran, how often it was tried and for how long.

* in-process (default): the jobs one after the other in dependency order; a failed job is reported and the jobs
  that need it are skipped, the others go on. Nothing but the kit is needed (`make demo`).
* Ray (`executor="ray"`): one task per job with its GPU (and CPU) request; an evaluation task takes its training
  task's result as an argument, so Ray starts it when the training has finished. A task whose worker process or
  node dies is retried (`retries`), and the retried training resumes from its last checkpoint (mid-epoch ones with
  `train.checkpoint_every`), drawing the same batches and noise as an uninterrupted run (engine/train.py). A job
  that fails by itself (bad data, a diverged loss) is not retried: it would fail again. Every node must see the
  workspace at the same path (a shared file system) and have the kit installed.
"""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import io
from ..errors import SSVPError
from ..workspace import ENV as WORKSPACE_ENV
from .experiments import EvalJob, Model, Study
from .plan import Plan

INSTALL_HINT = ("--executor ray needs Ray, an optional dependency: pip install 'ssvp[cluster]' (from a checkout: "
                "pip install '.[cluster]'), on this machine and every node of the cluster")
DEFAULT_RETRIES = 3


@dataclass(frozen=True)
class StudySpec:
    """What a worker needs to open the driver's study: the workspace is explicit, never looked up."""

    profile: str
    workspace: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class JobSpec:
    id: str
    kind: str  # "train" | "evaluate"
    model: Model
    evaluation: EvalJob | None
    needs: tuple[str, ...]


_STUDIES: dict[StudySpec, Study] = {}  # a worker process that runs several jobs opens each study once


def _study(spec: StudySpec) -> Study:
    if spec not in _STUDIES:
        _STUDIES[spec] = Study(spec.profile, spec.workspace, spec.overrides)
    return _STUDIES[spec]


def runs_folder(study: Study, run_id: str) -> Path:
    return study.workspace.runs / study.name / "plan-runs" / run_id


def attempt_folder(study: Study, run_id: str, job_id: str) -> Path:
    return runs_folder(study, run_id) / job_id.replace("/", "__")


def run_job(study_spec: StudySpec, job: JobSpec, run_id: str, where: dict | None = None, *needed) -> dict:
    """Run one job here and return what happened; each call leaves an attempt record (started, and finished or not)."""
    os.environ[WORKSPACE_ENV] = study_spec.workspace
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    study = _study(study_spec)
    started = time.time()
    record = {"job": job.id, "host": socket.gethostname(), "pid": os.getpid(), "started": started, **(where or {})}
    path = attempt_folder(study, run_id, job.id) / f"{record['host']}-{record['pid']}-{started:.3f}.json"
    io.write_json(path, record)
    try:
        if job.kind == "train":
            status = str(study.train([job.model], progress=False).status.iloc[0])  # trained / reused
        else:
            status = "reused" if study.cached_evaluation(job.evaluation) is not None else "evaluated"
            if status == "evaluated":
                study.evaluation(job.evaluation)
    except Exception as e:
        record.update(finished=time.time(), status="failed", error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc())
        io.write_json(path, record)
        raise
    record.update(finished=time.time(), status=status, seconds=round(time.time() - started, 2))
    io.write_json(path, record)
    return record


def attempts(study: Study, run_id: str, job_id: str) -> list[dict]:
    folder = attempt_folder(study, run_id, job_id)
    if not folder.is_dir():
        return []
    return sorted((json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda r: r["started"])


@dataclass
class Summary:
    run_id: str
    folder: Path
    executor: str
    rows: list[dict]
    seconds: float

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] in ("failed", "skipped")]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["job", "status", "attempts", "where", "seconds", "error"])

    def render(self) -> str:
        frame = self.frame().astype(object).fillna("")  # blanks where a job has no time or error
        ran = [r for r in self.rows if r["status"] not in ("already done",)]
        return "\n".join([frame.to_markdown(index=False, disable_numparse=True), "",
                          f"{len(ran)} job(s) run by the {self.executor} executor in {self.seconds:.0f} s, "
                          f"{len(self.rows) - len(ran)} already done, {len(self.failed)} failed or skipped; "
                          f"records in {self.folder}"])


def _where(attempt: dict) -> str:
    if not attempt:
        return ""
    text = f"{attempt['host']}:{attempt['pid']}"
    if attempt.get("node") and attempt["node"] != "in-process":
        text += f" node {attempt['node']}"
    if attempt.get("gpus"):
        text += f" GPU {attempt['gpus']}"
    return text


def _row(job_id: str, status: str, study: Study, run_id: str, error: str = "") -> dict:
    """A summary row: the last attempt that finished well says where and how long (the others were lost)."""
    tries = attempts(study, run_id, job_id)
    good = [a for a in tries if a.get("status") not in (None, "failed")]
    last = good[-1] if good else (tries[-1] if tries else {})
    return {"job": job_id, "status": status, "attempts": len(tries), "where": _where(last),
            "seconds": round(last["finished"] - last["started"], 1) if last.get("finished") else None,
            "error": error}


def run_plan(plan: Plan, executor: str = "local", address: str | None = None, gpus_per_job: float | None = None,
             cpus_per_job: float | None = None, retries: int = DEFAULT_RETRIES, log=None) -> Summary:
    """Run every job of the plan that the workspace does not hold yet; see the module docstring."""
    log = log or (lambda line: print(line, flush=True))
    study = plan.study
    spec = StudySpec(study.profile, str(study.workspace.root), tuple(study.overrides))
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    started = time.time()
    if executor == "local":
        rows = _run_local(plan, spec, run_id, log)
    elif executor == "ray":
        rows = _run_ray(plan, spec, run_id, address, gpus_per_job, cpus_per_job, retries, log)
    else:
        raise SSVPError(f"unknown executor {executor!r}: choose local or ray")
    summary = Summary(run_id, runs_folder(study, run_id), executor, rows, time.time() - started)
    io.write_json(summary.folder / "summary.json", {"executor": executor, "seconds": summary.seconds,
                                                    "profile": study.profile, "pages": plan.pages,
                                                    "overrides": list(study.overrides), "jobs": rows})
    return summary


def _job_spec(job) -> JobSpec:
    return JobSpec(job.id, job.kind, job.model, job.evaluation, tuple(job.needs))


def _progress(log, done: int, total: int, row: dict) -> None:
    extra = f" after {row['attempts']} attempts" if row["attempts"] > 1 else ""
    took = f" in {row['seconds']:.0f} s" if row["seconds"] is not None else ""
    log(f"[{done}/{total}] {row['job']}: {row['status']}{took}" + (f" on {row['where']}" if row["where"] else "")
        + extra + (f" ({row['error']})" if row["error"] else ""))


def _run_local(plan: Plan, spec: StudySpec, run_id: str, log) -> list[dict]:
    rows: dict[str, dict] = {}
    todo = plan.todo()
    for job in plan.jobs:
        if job.done:
            rows[job.id] = _row(job.id, "already done", plan.study, run_id)
            continue
        blocked = [n for n in job.needs if rows.get(n, {}).get("status") in ("failed", "skipped")]
        if blocked:
            rows[job.id] = _row(job.id, "skipped", plan.study, run_id, f"needs {', '.join(blocked)}, which failed")
        else:
            try:
                status, error = run_job(spec, _job_spec(job), run_id, {"node": "in-process"})["status"], ""
            except Exception as e:  # reported in the summary with the attempt's traceback; the other jobs go on
                status, error = "failed", f"{type(e).__name__}: {e}"
            rows[job.id] = _row(job.id, status, plan.study, run_id, error)
        _progress(log, sum(1 for r in rows.values() if r["status"] != "already done"), len(todo), rows[job.id])
    return list(rows.values())


# -- Ray --------------------------------------------------------------------------------------------------------------
def _import_ray():
    try:
        import ray
    except ImportError:
        raise SSVPError(INSTALL_HINT) from None
    return ray


def _ray_task(study_spec: StudySpec, job: JobSpec, run_id: str, *needed) -> dict:
    """The body of a Ray task: `run_job` with where it runs (node, GPUs Ray gave it)."""
    import ray

    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU") or []
    return run_job(study_spec, job, run_id, {"node": context.get_node_id()[:8], "gpus": ",".join(map(str, gpus))})


def _failed(ray, ref) -> bool:
    try:
        ray.get(ref, timeout=0)
        return False
    except ray.exceptions.GetTimeoutError:
        return False
    except ray.exceptions.RayError:
        return True


def connect(address: str | None):
    """Connect to a running Ray cluster: `address`, else $RAY_ADDRESS, else one started on this machine with `ray
    start`."""
    ray = _import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SSVPError(f"no Ray cluster at {address!r} ({e}). Start one: `ray start --head` on this machine (its GPUs), "
                        "then `ray start --address HEAD:6379` on the other nodes; or pass --address HOST:PORT or set "
                        "RAY_ADDRESS") from None
    return ray


def _run_ray(plan: Plan, spec: StudySpec, run_id: str, address, gpus_per_job, cpus_per_job, retries, log) -> list[dict]:
    ray = connect(address)
    try:
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        if gpus_per_job is None:
            gpus_per_job = 1 if gpus else 0
        if cpus_per_job is None:
            cpus_per_job = max(1, int(resources.get("CPU", 1) // gpus)) if gpus else 1
        task = ray.remote(_ray_task)
        refs, rows = {}, {}
        for job in plan.jobs:
            if job.done:
                rows[job.id] = _row(job.id, "already done", plan.study, run_id)
                continue
            needed = [refs[n] for n in job.needs if n in refs]
            refs[job.id] = task.options(num_gpus=gpus_per_job, num_cpus=cpus_per_job, max_retries=retries,
                                        retry_exceptions=False, name=job.id).remote(spec, _job_spec(job), run_id, *needed)
        log(f"{len(refs)} job(s) submitted to the Ray cluster ({resources.get('CPU', 0):g} CPUs, {gpus:g} GPUs; "
            f"{gpus_per_job:g} GPU and {cpus_per_job:g} CPU per job, {retries} retries)")
        pending = {ref: job_id for job_id, ref in refs.items()}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job_id = pending.pop(ref)
                try:
                    row = _row(job_id, ray.get(ref)["status"], plan.study, run_id)
                except ray.exceptions.RayTaskError as e:
                    failed_need = [n for n in plan.job(job_id).needs if n in refs and _failed(ray, refs[n])]
                    if failed_need:  # Ray passes the training's error on to the evaluation that needed it
                        row = _row(job_id, "skipped", plan.study, run_id, f"needs {', '.join(failed_need)}, which failed")
                    else:
                        cause = e.cause if getattr(e, "cause", None) is not None else e
                        row = _row(job_id, "failed", plan.study, run_id, f"{type(cause).__name__}: {cause}")
                except ray.exceptions.RayError as e:  # the worker or node died more often than `retries`
                    row = _row(job_id, "failed", plan.study, run_id, f"{type(e).__name__}: {str(e).splitlines()[0]}")
                rows[job_id] = row
                _progress(log, sum(1 for r in rows.values() if r["status"] != "already done"), len(refs), row)
        return [rows[job.id] for job in plan.jobs]
    finally:
        ray.shutdown()


__all__ = ["run_plan", "run_job", "Summary", "StudySpec", "JobSpec", "connect", "attempts", "runs_folder",
           "INSTALL_HINT"]
