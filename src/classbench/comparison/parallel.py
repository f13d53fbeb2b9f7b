"""``--parallel``: a compare's pending runs spread over the GPUs of one machine, one training process per GPU
(``training/child.py``; each run resumable on its own). Scoring and the verdict follow in the driver."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from classbench.comparison.replicates import Job
from classbench.console import warn
from classbench.errors import RunError


def train_parallel(jobs: list[Job], options: dict[str, dict[str, Any]]) -> None:
    """Train every unfinished job, as many at a time as there are GPUs; ``options[model]`` for each."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        warn("--parallel needs several GPUs; training one run after another.")
        return
    from classbench.training.child import child_command

    pending = [j for j in jobs if not (j.run_dir / "summary.json").is_file()]
    while pending:
        batch, pending = pending[:gpus], pending[gpus:]
        procs = []
        for gpu, job in enumerate(batch):
            cmd = child_command(job.data, job.model, job.run_dir, {**options[job.model], "seed": job.seed})
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            procs.append((job, subprocess.Popen(cmd, env=env)))
        failed = [f"{job.model} {job.label}".strip() for job, proc in procs if proc.wait() != 0]
        if failed:
            raise RunError(f"training failed for {', '.join(failed)}; re-run the same compare to resume")
