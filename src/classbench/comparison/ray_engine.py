"""``compare --engine ray``: a compare's trainings as Ray tasks, on this machine or on a cluster.

Each (architecture, fold or seed) job is one Ray task that trains (or resumes) its run folder and scores it on
its held-out images, exactly as the local engine does (``replicates.run``), with the job's own seed, so an
engine never changes the verdict. The driver alone writes compare-level files; a task writes only its run
folder (atomically, as a local run does) and a small ``<run>.worker.json`` (node, process) beside it.

Contract:

* **Where**: ``address`` (``--ray-address``, else ``RAY_ADDRESS``) joins a running cluster (``auto``: the one
  ``ray start`` made on this machine); none starts a local Ray instance for the compare and stops it after.
  An address that does not answer fails within seconds, before anything is written.
* **Resources per run**: ``gpus_per_run`` (fractions share one GPU between runs) and ``cpus_per_run``. Default:
  one GPU per run where the cluster has GPUs, with the node's CPUs shared out in proportion; on CPUs only,
  ``CPU_ONLY_CPUS_PER_RUN`` cores per run (all cores on a smaller machine), so a 16-core machine trains 4 runs at
  once with 4 threads each. A request no node can hold fails at once with what the cluster offers.
* **Storage**: the compare folder must be on storage every node mounts at the same path; one probe task per
  node checks it first.
* **Faults**: a task whose worker process dies is retried (``RETRIES`` times) and resumes from its
  ``last.ckpt``; a run failing for a user-data reason (a ``ClassbenchError``) is not retried: it is reported
  with its one-line error while the other runs go on, and the compare stops after them with every finished run
  kept. Ctrl-C cancels the tasks; re-running the same compare resumes.

Written here rather than with Ray Tune: a compare is a fixed list of jobs, not a search, and its state lives in
run folders that the local engine shares; Ray core's tasks are the smallest API that gives placement, retries
and cancellation.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from classbench.comparison import replicates as R
from classbench.errors import ClassbenchError, RunError, first_line, import_optional
from classbench.runs import read_json_or

RETRIES = 2  # restarts of a task whose worker process died (each resumes from last.ckpt)
CPU_ONLY_CPUS_PER_RUN = 4
CONNECT_TIMEOUT_S = 3.0
WORKER_SUFFIX = ".worker.json"  # beside the run folder: a fresh run's training may replace the folder itself


def check_address(address: str) -> None:
    """Fail within seconds, naming ``address``, when nothing listens there (``auto`` is looked up by Ray)."""
    if address == "auto":
        return
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ClassbenchError(f"--ray-address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT "
                              "or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ClassbenchError(f"the Ray cluster at {address} does not answer ({err.strerror or err}); start it with "
                              "`ray start --head` or check --ray-address") from None


def connect(address: str | None) -> tuple[Any, bool]:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), or start a local instance; returns ``(ray,
    started_here)``. An already initialised Ray (a notebook, a test) is used as it is."""
    ray = import_optional("ray", "ray", "--engine ray")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_address(address)
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as err:
        where = f"at {address}" if address else "on this machine"
        raise ClassbenchError(f"no Ray cluster answers {where} ({err}); start one with `ray start --head`") from None
    return ray, address is None


@contextlib.contextmanager
def session(address: str | None) -> Iterator[Any]:
    """Ray for the length of a compare: joined, or started here and stopped at the end."""
    ray, started = connect(address)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _nodes(ray: Any) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _offer(nodes: list[dict[str, Any]]) -> str:
    def one(n: dict[str, Any]) -> str:
        res = n.get("Resources", {})
        gpus = res.get("GPU", 0)
        return f"{res.get('CPU', 0):g} CPUs" + (f" + {gpus:g} GPUs" if gpus else "")

    return f"{len(nodes)} node(s): " + ", ".join(one(n) for n in nodes)


def per_run_resources(ray: Any, gpus_per_run: float | None, cpus_per_run: float | None) -> tuple[float, float]:
    """``(gpus, cpus)`` each task asks for (defaults in the module docstring); one line with what the cluster
    offers when no node can hold that."""
    nodes = _nodes(ray)
    biggest = max(nodes, key=lambda n: (n["Resources"].get("GPU", 0), n["Resources"].get("CPU", 0)))["Resources"]
    node_gpus, node_cpus = biggest.get("GPU", 0.0), biggest.get("CPU", 1.0)
    gpus = (1.0 if node_gpus >= 1 else 0.0) if gpus_per_run is None else float(gpus_per_run)
    if gpus < 0 or (cpus_per_run is not None and cpus_per_run <= 0):
        raise ClassbenchError("--gpus-per-run must be >= 0 and --cpus-per-run > 0")
    if cpus_per_run is None:
        share = node_cpus * min(1.0, gpus / node_gpus) if gpus > 0 and node_gpus else min(CPU_ONLY_CPUS_PER_RUN, node_cpus)
        cpus = max(1.0, float(int(share)))
    else:
        cpus = float(cpus_per_run)
    if not any(n["Resources"].get("GPU", 0) >= gpus and n["Resources"].get("CPU", 0) >= cpus for n in nodes):
        raise ClassbenchError(f"no Ray node can hold a run of {gpus:g} GPU(s) and {cpus:g} CPU(s): the cluster offers "
                              f"{_offer(nodes)}; lower --gpus-per-run / --cpus-per-run")
    return gpus, cpus


def _sees(marker: str) -> tuple[str, bool]:
    return socket.gethostname(), os.path.exists(marker)


def check_shared_folder(ray: Any, out: Path) -> None:
    """One probe task per node: each must see a file the driver just wrote in ``out``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = out / f".ray-probe-{uuid.uuid4().hex}"
    marker.write_text("classbench", encoding="utf-8")
    try:
        probe = ray.remote(_sees)
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(marker)) for n in _nodes(ray)]
        blind = [host for host, seen in ray.get(refs, timeout=120) if not seen]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ClassbenchError(f"{out}: not visible from Ray node(s) {', '.join(sorted(set(blind)))}; put the compare "
                              "folder (--out) on storage every node mounts at the same path")


def train_task(job: R.Job, options: dict[str, Any], step: str) -> dict[str, Any]:
    """One job on a Ray worker: train or resume, then score. A user-data error comes back as a value (not
    retried); anything else (a dead process) is Ray's to retry."""
    import ray
    import torch

    from classbench.training.config import resolve_workers

    assigned = ray.get_runtime_context().get_assigned_resources()
    cpus = int(assigned.get("CPU", 1)) or 1
    torch.set_num_threads(cpus)
    workers = resolve_workers(options.get("workers", "auto"), options.get("cache", "auto") != "off",
                              assigned.get("GPU", 0) > 0, cores=cpus)
    options = {**options, "workers": workers}
    node = socket.gethostname()
    from classbench.runs import atomic_write_json

    atomic_write_json(worker_file(job.run_dir), {"node": node, "pid": os.getpid(), "cpus": cpus, "time": time.time()})
    try:
        R.run(job, options, step)
    except ClassbenchError as err:
        return {"error": str(err), "node": node}
    return {"error": None, "node": node}


def train_on_ray(jobs: list[R.Job], options_for: Callable[[R.Job], dict[str, Any]], out: Path, *,
                 address: str | None = None, gpus_per_run: float | None = None, cpus_per_run: float | None = None,
                 waves: list[list[R.Job]] | None = None, on_wave_done: Callable[[list[R.Job]], None] | None = None,
                 progress: bool = True) -> None:
    """Train and score every unfinished job of ``jobs`` as Ray tasks (``waves``: groups run one after another,
    e.g. each architecture's first run before the others under ``--lr auto``; ``on_wave_done`` runs between)."""
    with session(address) as ray:
        gpus, cpus = per_run_resources(ray, gpus_per_run, cpus_per_run)
        check_shared_folder(ray, out)
        remote = ray.remote(max_retries=RETRIES, retry_exceptions=False)(train_task)
        failures: list[str] = []
        for wave in waves or [jobs]:
            failures += _run_wave(ray, remote, wave, options_for, gpus, cpus, progress)
            if on_wave_done:
                on_wave_done(wave)
    if failures:
        raise RunError(f"{len(failures)} of {len(jobs)} runs failed ({'; '.join(failures)}); the finished runs are "
                       "kept: fix the cause and re-run the same compare to resume")


def _run_wave(ray: Any, remote: Any, wave: list[R.Job], options_for: Callable[[R.Job], dict[str, Any]],
              gpus: float, cpus: float, progress: bool) -> list[str]:
    """Submit the wave's unfinished jobs, show their progress, and return one line per failed run."""
    from classbench.comparison.ray_progress import RunBoard

    todo = [j for j in wave if not (j.run_dir / "summary.json").is_file() or not j.predictions.is_file()]
    if not todo:
        return []
    pending: dict[Any, R.Job] = {}
    for i, job in enumerate(todo, 1):
        options = _absolute_options({**options_for(job), "progress": False})
        if gpus > 0:
            options.update(accelerator="gpu", devices=1)
        elif options.get("accelerator", "auto") == "auto":
            options["accelerator"] = "cpu"
        ref = remote.options(num_gpus=gpus, num_cpus=cpus).remote(_absolute(job), options, f"[{i}/{len(todo)}]")
        pending[ref] = job
    failures: list[str] = []
    board = RunBoard(todo, enabled=progress)
    try:
        with board:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                for ref in ready:
                    job = pending.pop(ref)
                    error = _outcome(ray, ref)
                    board.finished(job, error)
                    if error:
                        failures.append(f"{job.name} {job.label}".strip() + f": {error}")
                board.refresh()
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return failures


def _outcome(ray: Any, ref: Any) -> str | None:
    """The task's user-data error, a line for a task Ray gave up on, or None when it finished."""
    try:
        return ray.get(ref)["error"]
    except ray.exceptions.RayTaskError as err:
        return f"{type(err.cause).__name__ if err.cause else 'error'}: {first_line(err.cause or err, 300)}"
    except ray.exceptions.RayError as err:
        return f"the worker was lost {RETRIES + 1} times ({type(err).__name__})"


def _absolute(job: R.Job) -> R.Job:
    """The job with absolute paths: a worker's working directory is not the driver's."""
    from dataclasses import replace

    return replace(job, run_dir=job.run_dir.resolve(), data=job.data.resolve())


def _absolute_options(options: dict[str, Any]) -> dict[str, Any]:
    """Paths among a run's options made absolute (the shared cache's manifest, local weights)."""
    for key in ("cache_pool", "weights"):
        value = options.get(key)
        if isinstance(value, str) and value and not value.startswith("hf-hub:") and Path(value).exists():
            options[key] = str(Path(value).resolve())
    return options


def worker_file(run_dir: Path) -> Path:
    """Where the Ray task training ``run_dir`` records its node and process."""
    return run_dir.with_name(run_dir.name + WORKER_SUFFIX)


def worker_of(run_dir: Path) -> dict[str, Any]:
    """The node and process a Ray task recorded for ``run_dir`` (empty before it started)."""
    return read_json_or(worker_file(run_dir), {})
