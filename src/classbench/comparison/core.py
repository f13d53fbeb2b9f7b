"""``compare()``: the bake-off. Every architecture trains under identical conditions on the same folds (or
seeds) of one split; the verdict is decided on held-out predictions that never touch the test split; the
selected architecture's final model is then evaluated once on the locked test split."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classbench.comparison import replicates as R
from classbench.comparison.folder import ARG_DEFAULTS, FOLD_SEEDS, ensure_split, open_folder, update_state
from classbench.comparison.leaderboard import build_row, measure_inference, write_figures, write_leaderboard
from classbench.console import info, warn
from classbench.errors import DataError, RunError
from classbench.runs import atomic_write_json, command_line, read_json, remove_own_folder, safe_name
from classbench.training.config import DEFAULTS as D

REPORT_MODELS = ("densenet121", "inception_v3", "mobilenetv2", "resnet50")
ENGINES = ("local", "ray")
DEFAULT_OUT = Path("runs") / "compare"  # the compare folder when none is given
PRESETS: dict[str, dict[str, Any]] = {
    # The report's protocol: four architectures from scratch, 20 epochs, 70/30 train/val, and one
    # held-out image per class -- evaluated side by side with a locked, stratified test split.
    # test 0.2 is locked away first; val 0.24 of the whole is 30% of the remaining 80% (the report's 70/30).
    "report": {"models": REPORT_MODELS, "epochs": 20, "val": 0.24, "test": 0.2, "pretrained": False},
}


@dataclass
class Leaderboard:
    """The verdict's rows, best first; ``best`` loads the selected architecture's final model: retrained on the
    whole split (train, checkpoint on val) after cross-validation, or the base seed's run on the split otherwise."""

    path: Path
    rows: list[dict[str, Any]]
    sentence: str = ""
    protocol: str = ""
    report: Path | None = None
    label_issues: int = 0

    @property
    def best(self) -> Any:
        from classbench.predict import load

        final = next((r["run_dir"] for r in self.rows if r["status"] == "best" and r.get("run_dir")), None)
        if final is None:
            raise RunError(f"{self.path}: no final model (compare ran with --no-refit); re-run the same compare "
                           "with --refit: the runs are kept, only the final model is trained")
        return load(final)


def compare(data: str | os.PathLike, models: Sequence[str] | None = None, out: str | os.PathLike | None = None,
            epochs: int = D["epochs"], img_size: int | None = None, seed: int = D["seed"], preset: str | None = None,
            folds: int | str = ARG_DEFAULTS["folds"], seeds: int = ARG_DEFAULTS["seeds"],
            repeats: int | str = ARG_DEFAULTS["repeats"], refit: bool = ARG_DEFAULTS["refit"], engine: str = ENGINES[0],
            ray_address: str | None = None,
            gpus_per_run: float | None = None, cpus_per_run: float | None = None, overwrite: bool = False,
            progress: bool = True, val: float = D["val"], test: float = D["test"], **train_options: Any) -> Leaderboard:
    """Train every model in ``models`` on the same folds (``folds``; ``"auto"``: 5 when the non-test pool is
    small, see ``classbench.data.folds.resolve_folds``), ``repeats`` times with fresh folds (repeated K-fold:
    R x K runs per model, a narrower fold interval; ``"auto"``: 2 when ``folds="auto"`` chose folds, else 1,
    see ``resolve_repeats``), or seeds (``seeds``) on one split; decide the verdict on held-out predictions,
    refit and test the selected one. Re-running with the same ``out`` resumes.

    ``engine``: ``"local"`` trains one run after another in this process; ``"ray"`` runs them as Ray tasks
    (``ray_address``, ``gpus_per_run``, ``cpus_per_run``: see ``classbench.comparison.ray_engine``). The
    engine never changes the verdict: the same jobs, folds and seeds either way."""
    if engine not in ENGINES:
        raise RunError(f"--engine {engine!r} is unknown; choose one of: {', '.join(ENGINES)}")
    if preset:
        if preset not in PRESETS:
            raise RunError(f"--preset {preset!r} is unknown; choose one of: {', '.join(PRESETS)}")
        settings = PRESETS[preset]
        models = models or settings["models"]
        val, test = settings["val"], settings["test"]
        train_options["pretrained"] = settings["pretrained"]
        folds = 1 if folds == "auto" else folds
    if seeds < 1:
        raise DataError(f"--seeds must be >= 1 (got {seeds})")
    if seeds > 1 and folds not in ("auto", 1):
        raise DataError("choose either --folds K (cross-validation) or --seeds N (repeats on one split), not both")
    if repeats != "auto" and (not isinstance(repeats, int) or repeats < 1):
        raise DataError(f"--repeats must be a whole number >= 1 or 'auto' (got {repeats!r})")
    if repeats not in ("auto", 1) and (seeds > 1 or folds == 1):
        raise DataError(f"--repeats {repeats}: repeats the cross-validation, so it needs --folds K > 1 and no --seeds "
                        "(a --preset report compare has one split); use --repeats 1 otherwise")
    args = {"data": str(data), "models": list(models or REPORT_MODELS), "epochs": epochs, "img_size": img_size,
            "seed": seed, "preset": preset, "val": val, "test": test, "folds": folds, "seeds": seeds,
            "repeats": repeats, "refit": refit,
            "fold_seeds": FOLD_SEEDS, "train_options": train_options}
    ray = {"address": ray_address, "gpus_per_run": gpus_per_run, "cpus_per_run": cpus_per_run, "progress": progress}
    # Ray is joined (or started) before anything is written: a missing Ray or a silent address is one line
    with _engine_session(ray if engine == "ray" else None):
        return _run(Path(out) if out else DEFAULT_OUT, args, overwrite, progress,
                    ray if engine == "ray" else None)


@contextlib.contextmanager
def _engine_session(ray: dict[str, Any] | None) -> Iterator[None]:
    """Ray joined (or started) for the compare, and the resources per run checked, before anything is written."""
    if ray is None:
        yield
        return
    from classbench.comparison.ray_engine import per_run_resources, session

    with session(ray["address"]) as cluster:
        per_run_resources(cluster, ray["gpus_per_run"], ray["cpus_per_run"])
        yield


def _run(out: Path, args: dict[str, Any], overwrite: bool, progress: bool, ray: dict[str, Any] | None) -> Leaderboard:
    """The compare itself, once its arguments are checked: split, folds, trainings, verdict, final model."""
    from classbench.data.folds import AUTO_POOL_LIMIT, resolve_repeats

    models, seed, train_options, img_size = args["models"], args["seed"], args["train_options"], args["img_size"]
    open_folder(out, args, overwrite)
    manifest_path = ensure_split(out, args["data"], args["val"], args["test"], seed)
    k = _resolve_folds(out, manifest_path, args["folds"] if args["seeds"] == 1 else 1)
    repeats = resolve_repeats(args["repeats"], args["folds"], k)
    if repeats > 1 and k == 1:
        raise DataError(f"--repeats {repeats}: --folds auto chose one split for this pool (more than "
                        f"{AUTO_POOL_LIMIT} images); pass --folds K (with --overwrite, or another --out)")
    names = [safe_name(m) for m in models]
    jobs = R.plan(out, manifest_path, models, names, k, args["seeds"], seed,
                  R.inner_val_fraction(args["val"], args["test"]), repeats=repeats)
    common = {"epochs": args["epochs"], "img_size": img_size, "progress": progress, **train_options}
    if train_options.get("cache", "auto") in ("auto", "disk"):
        common["cache_pool"] = str(manifest_path)  # every model and fold decodes each image once
    lrs = _train_all(out, jobs, models, common, img_size, ray)
    protocol = (f"{repeats} x {k}-fold cross-validation, out-of-fold" if repeats > 1 else
                f"{k}-fold cross-validation, out-of-fold" if k > 1 else  # val also chose the checkpoints:
                f"{args['seeds']} seeds, validation split (it chose the checkpoints)" if args["seeds"] > 1 else
                "one run, validation split (it chose the checkpoints)")
    verdict, held = _decide(jobs, manifest_path, protocol, k if k > 1 else 0, seed)
    finals = _final_model(out, manifest_path, verdict.selected, models, names, common, lrs, k > 1,
                          one_per_class=args["preset"] == "report", seed=seed) if args["refit"] else {}
    n_issues = _label_issues(out, held, verdict) if k > 1 else 0
    board = _write(out, jobs, verdict, held, finals, lrs, n_issues)
    from classbench.report.html import build_report

    board.report = build_report(out)
    # the latest call's arguments (--refit and --repeats may differ from the first call's)
    update_state(out, args=args, command=command_line(), repeats_resolved=repeats)
    return board


def _resolve_folds(out: Path, manifest_path: Path, folds: int | str) -> int:
    from classbench.comparison.folder import update_state
    from classbench.data.folds import resolve_folds
    from classbench.data.manifest import Manifest

    k = resolve_folds(folds, Manifest.load(manifest_path))
    state = read_json(out / "compare.json")
    if state.get("folds_resolved") != k:
        update_state(out, folds_resolved=k)
        if k > 1 and state.get("given_split"):
            info("--folds: the given val/ images join train/ in the cross-validation pool; the given test/ stays "
                 "locked; the final model trains on the given train/ and picks its checkpoint on the given val/.",
                 markup=False)
    return k


def _size_for(model: str, img_size: int | None) -> int | None:
    """A forced size below a model's minimum is raised to that minimum (with a note), not a failed compare."""
    from classbench.models import min_input_size

    if img_size is None:
        return None
    smallest = min_input_size(model)
    if img_size < smallest:
        warn(f"{model} cannot run at {img_size} px; it trains at its minimum, {smallest} px.")
        return smallest
    return img_size


def _train_all(out: Path, jobs: list[R.Job], models: list[str], common: dict[str, Any], img_size: int | None,
               ray: dict[str, Any] | None) -> dict[str, float | None]:
    """Run every job (skipping finished ones), here or as Ray tasks (``ray``: the engine's options);
    ``--lr auto`` is found once per architecture, on its first run (always run first, on either engine), and
    reused by its other runs and its final model. The range test reads only training batches (their loss),
    never a held-out fold's predictions. Returns the learning rate each architecture trained with."""
    sizes = {m: _size_for(m, img_size) for m in models}
    auto = common.get("lr") == "auto"
    lrs: dict[str, float | None] = {}

    def options_for(job: R.Job) -> dict[str, Any]:
        options = {**common, "img_size": sizes[job.model]}
        if auto and lrs.get(job.name) is not None:
            options["lr"] = lrs[job.name]
        return options

    def found(wave: list[R.Job]) -> None:
        for job in wave:
            lrs.setdefault(job.name, R.resolved_lr(job.run_dir))

    first = list({job.name: job for job in reversed(jobs)}.values())[::-1]  # each architecture's first job
    if ray is not None:
        from classbench.comparison.ray_engine import train_on_ray

        rest = [j for j in jobs if j not in first]
        train_on_ray(jobs, options_for, out, waves=[first, rest] if auto else [jobs], on_wave_done=found, **ray)
        found(jobs)
        return lrs
    for i, job in enumerate(jobs, 1):
        R.run(job, options_for(job), f"[{i}/{len(jobs)}]")
        found([job])
    return lrs


def _decide(jobs: list[R.Job], manifest_path: Path, protocol: str, folds: int, seed: int) -> tuple[Any, R.HeldOut]:
    from classbench.data.manifest import Manifest
    from classbench.verdict import Replicates, decide

    manifest = Manifest.load(manifest_path)
    held = R.collect(jobs, manifest.classes)
    if held.dropped:
        warn(f"{held.dropped} held-out image(s) could not be scored by every model and are left out of the verdict")
    if not held.paths:
        raise RunError("no held-out image was scored by every model; see the warnings above")
    group_of = {str(s.path): s.group or str(s.path) for s in manifest.samples}
    results = {name: Replicates([p.argmax(axis=1) for p in probs], held.fold_scores[name])
               for name, probs in held.probs.items()}
    verdict = decide(results, held.labels, len(held.classes), protocol, [group_of.get(p, p) for p in held.paths],
                     folds=folds, seed=seed)
    return verdict, held


def _final_model(out: Path, manifest_path: Path, selected: str, models: list[str], names: list[str],
                 common: dict[str, Any], lrs: dict[str, float | None], refit: bool, one_per_class: bool,
                 seed: int) -> dict[str, Path]:
    """The selected architecture's final model, evaluated on the test split once: after cross-validation
    (``refit``) it is retrained on the split's train part with its checkpoint chosen on the val part (the
    whole non-test pool, no fold held out); otherwise its base-seed run on that split already is. Returns
    ``{name: final run folder}``."""
    from classbench.evaluation import evaluate

    model = models[names.index(selected)]
    final = out / selected
    if refit:
        options = {**common, "img_size": _size_for(model, common.get("img_size")), "seed": seed}
        if lrs.get(selected) is not None and common.get("lr") == "auto":
            options["lr"] = lrs[selected]
        R.run(R.Job(model, selected, "refit on the whole split (train + val)", final, manifest_path, seed, "val"),
              options, "[final]")
    if not (final / "summary.json").is_file():
        return {}
    if not (final / "eval.json").is_file():
        info(f"{selected}: evaluating the final model on the locked test split (once).", markup=False)
        evaluate(final, split="test", progress=common.get("progress", True))
    if one_per_class:
        _write_one_per_class(manifest_path, out / "onepc.csv", seed)
        if not (final / "eval-onepc.json").is_file():
            evaluate(final, data=out / "onepc.csv", progress=False)
    return {selected: final}


def _label_issues(out: Path, held: R.HeldOut, verdict: Any) -> int:
    """``label_issues.csv`` + ``label_issues.png`` from the top and tied models' out-of-fold probabilities,
    averaged over the models and the repeats of the cross-validation."""
    from classbench.label_issues import label_issue_rows, plot_label_issues, write_label_issues

    chosen = [verdict.selected] + verdict.tied
    probs = np.mean([p for name in chosen for p in held.probs[name]], axis=0)
    check = read_json(out / "check.json") if (out / "check.json").is_file() else {}
    rows = label_issue_rows(held.paths, held.classes, held.labels, probs, check.get("label_conflicts") or [])
    write_label_issues(out / "label_issues.csv", rows)
    plot_label_issues(rows, out / "label_issues.png")
    return len(rows)


def _heldout_worst(held: R.HeldOut, name: str) -> tuple[str | None, float | None]:
    """The class ``name`` recalls worst on its held-out images (recall averaged over replicates), and that recall."""
    from classbench.metrics import classification_summary, worst_class

    recalls = np.mean([[c["recall"] for c in classification_summary(held.labels, p.argmax(axis=1), None,
                                                                    held.classes)["per_class"]]
                       for p in held.probs[name]], axis=0)  # each class's recall, averaged over replicates
    worst = worst_class(recalls, np.bincount(held.labels, minlength=len(held.classes)))
    return (None, None) if worst is None else (held.classes[worst], float(recalls[worst]))


def _write(out: Path, jobs: list[R.Job], verdict: Any, held: R.HeldOut, finals: dict[str, Path],
           lrs: dict[str, float | None], n_issues: int) -> Leaderboard:
    standings = [s.to_dict() for s in verdict.standings]
    runs = {s["name"]: [j.run_dir for j in jobs if j.name == s["name"]] for s in standings}
    for run_dirs in runs.values():
        if not (run_dirs[0] / "inference.json").is_file():  # the speed of the architecture, from its first run
            atomic_write_json(run_dirs[0] / "inference.json", measure_inference(run_dirs[0]))
    rows = [build_row(s, runs[s["name"]], finals.get(s["name"]), _heldout_worst(held, s["name"]), lrs.get(s["name"]))
            for s in standings]
    atomic_write_json(out / "verdict.json", {**verdict.to_dict(), "final": {k: str(v) for k, v in finals.items()},
                                             "label_issues": n_issues})
    write_leaderboard(out, rows, verdict.sentence)
    write_figures(out, rows, {name: run_dirs[0] for name, run_dirs in runs.items()}, standings)
    return Leaderboard(out, rows, verdict.sentence, verdict.protocol, label_issues=n_issues)


def _write_one_per_class(manifest_path: Path, target: Path, seed: int) -> None:
    """The report's protocol: one held-out image per class, drawn from the locked test split."""
    import random

    from classbench.data.manifest import Manifest

    if target.is_file():
        return
    manifest = Manifest.load(manifest_path)
    rng = random.Random(seed)
    chosen = []
    for cls in manifest.classes:
        pool = sorted((s for s in manifest.subset("test") if s.label == cls), key=lambda s: str(s.path))
        if pool:
            chosen.append(rng.choice(pool))
    Manifest(chosen, manifest.classes).save(target)


# From scratch at 32 px, 8 epochs on the demo digits (test macro-F1, Xeon): resnet10t 1.00, resnet18 0.88,
# densenet121 0.86, mobilenetv2 0.32 (its depthwise stages learn slowly this small; the leaderboard says which
# class it misses), efficientnet_b0 0.57 (replaced by resnet10t), regnetx_002 0.43, vgg11_bn 0.14.
DEMO_MODELS = ("resnet10t", "resnet18", "mobilenetv2", "densenet121")


def demo(out: str | os.PathLike = "runs/demo", epochs: int = 8, overwrite: bool = True,
         models: Sequence[str] = DEMO_MODELS, progress: bool = True, folds: int | str = 3) -> Leaderboard:
    """Built-in demo: write the imbalanced digits dataset, compare four small models at 32 px over ``folds``
    folds, report the verdict."""
    from classbench.data.demo import DEMO_SIZE
    from classbench.data.demo import demo as demo_data

    out = Path(out)
    data_dir = out / "data"
    if overwrite and out.exists() and any(out.iterdir()):
        remove_own_folder(out, ("compare/compare.json", "data/digit_0"), "demo")
    if not data_dir.is_dir():
        demo_data(data_dir)
    return compare(data_dir, models=models, out=out / "compare", epochs=epochs, img_size=DEMO_SIZE, folds=folds,
                   progress=progress)
