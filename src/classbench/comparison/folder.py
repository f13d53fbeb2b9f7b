"""A compare folder's state: ``compare.json`` (the arguments, command line, environment), the one split
every model shares, and the rule that a re-run with the same arguments resumes instead of starting over."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from classbench.console import info
from classbench.errors import RunError
from classbench.runs import atomic_write_json, command_line, environment_info, read_json, remove_own_folder, timestamp

# Arguments that change what a compare measures; a re-run that changes one is refused, not resumed.
# (--refit is not one: adding the final model to a finished compare keeps every run; nor is --repeats: repeat r's
# folds and seeds do not depend on how many repeats there are, so more repeats add runs and fewer reuse some.)
SHAPING_ARGS = ("data", "models", "epochs", "img_size", "seed", "preset", "val", "test", "folds", "seeds", "fold_seeds")
# compare()'s own defaults (the CLI reads them here); also what a folder made before these arguments existed had
ARG_DEFAULTS = {"folds": "auto", "seeds": 1, "repeats": "auto", "refit": True, "fold_seeds": "shared"}
FOLD_SEEDS = "seed+fold"  # how fold runs are seeded now (folders made before 2026-12 gave every fold one seed)


def open_folder(out: Path, args: dict[str, Any], overwrite: bool) -> None:
    """Create ``out`` with its ``compare.json``, or check that it holds this same compare (then it resumes)."""
    state_file = out / "compare.json"
    if state_file.is_file() and not overwrite:
        previous = read_json(state_file).get("args", {})
        changed = [k for k in SHAPING_ARGS if previous.get(k, ARG_DEFAULTS.get(k)) != args[k]]
        changed += changed_training_options(previous.get("train_options", {}), args["train_options"])
        if "fold_seeds" in changed:
            raise RunError(f"{out}: made by an older classbench that gave every fold the same seed; pass --overwrite "
                           "to redo it with one seed per fold, or another --out")
        if changed:
            raise RunError(f"{out}: holds a compare with other {', '.join(changed)}; pass --overwrite or another --out")
        info(f"Resuming the compare in {out}: finished runs are kept.", markup=False)
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"{out}: folder exists and is not a compare; pass --overwrite or another --out")
        remove_own_folder(out, (state_file.name,), "compare")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state_file, {"args": args, "command": command_line(), "models": list(args["models"]),
                                   "seed": args["seed"], "preset": args["preset"], "data": args["data"],
                                   "img_size": args["img_size"], "epochs": args["epochs"],
                                   "environment": environment_info(),
                                   "created": timestamp()})


def update_state(out: Path, **values: Any) -> None:
    """Add ``values`` to ``compare.json`` (atomically)."""
    state_file = out / "compare.json"
    atomic_write_json(state_file, {**read_json(state_file), **values})


def changed_training_options(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Options that would train the remaining models under other conditions (compared as saved in JSON; an
    option a folder predates counts as its default; how often last.ckpt is written and where runs log do not)."""
    from classbench.training.config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    now = json.loads(json.dumps(now, default=str))
    return sorted(k for k in (set(before) | set(now)) - {"checkpoint_every", "logger", "mlflow_uri"}
                  if before.get(k, defaults.get(k)) != now.get(k, defaults.get(k)))


def ensure_split(out: Path, data: Any, val: float, test: float, seed: int) -> Path:
    """``out/split.csv``: made once (after ``check``, saved as ``check.json``) and shared by every model."""
    from classbench.console import warn
    from classbench.data.check import check
    from classbench.data.split import carve_missing_validation, split

    manifest_path = out / "split.csv"
    if not manifest_path.is_file():
        report = check(data)
        atomic_write_json(out / "check.json", report.to_dict())
        result = split(data, val=val, test=test, seed=seed, report=report)
        carved = carve_missing_validation(result, val, seed, data)  # once, so every model and seed shares it
        if carved:
            warn(carved)
        result.manifest.save(manifest_path)
        update_state(out, given_split=result.given)
    return manifest_path


