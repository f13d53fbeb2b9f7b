"""One training process of a parallel compare: ``python -m classbench.training.child SPEC``.

SPEC is JSON, either ``{"train": {...train() keyword arguments...}}`` or ``{"resume": RUN, "progress": bool}``:
every option reaches the child as it is, including those the ``train`` command has no flag for.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def child_command(manifest: Path, model: str, run_dir: Path, options: dict[str, Any],
                  accelerator: str = "gpu") -> list[str]:
    """The command that trains (or resumes) one model with exactly ``options``, on one device."""
    if (run_dir / "last.ckpt").is_file():
        spec: dict[str, Any] = {"resume": str(run_dir), "progress": options.get("progress", True)}
    else:
        spec = {"train": {**options, "data": str(manifest), "model": model, "out": str(run_dir),
                          "overwrite": run_dir.exists(), "devices": 1, "accelerator": accelerator}}
    return [sys.executable, "-m", "classbench.training.child", json.dumps(spec, default=str)]


def main(spec_json: str) -> int:
    from classbench.errors import ClassbenchError
    from classbench.workflow import resume, train

    spec = json.loads(spec_json)
    try:
        if "resume" in spec:
            resume(spec["resume"], progress=spec.get("progress", True))
        else:
            train(**spec["train"])
    except ClassbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
