"""Does the bake-off verdict survive a change of seed? The report's four architectures on drone_maritime at
96 px, the compare protocol as a user runs it (cross-validated, ties called ties), seeds 0/1/2 (each seed
changes the split, the folds, the initialisation and the order). Prints per seed the verdict (the selected
model and the set tied with it) and the intervals; target: the same verdict in 3 of 3 seeds.

The single-split leaderboard this replaces changed winner with the seed (issue 16: test macro-F1 winner
resnet50 / densenet121 / densenet121 for seeds 0 / 1 / 2, with gaps of 0.0004 and 0.0005 between places).

Usage: .venv/bin/python benchmarks/bakeoff_stability.py [--seeds 0,1,2] [--folds auto] [--epochs 12]
       [--img-size 96] [--work runs/bakeoff-stability-v2] [--lr auto] [--repeats auto]
The work folder is kept (compares resume: an interrupted benchmark continues where it stopped).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import need_drone, print_table, write_results  # noqa: E402

import classbench  # noqa: E402


def verdict_set(board) -> tuple[str, ...]:
    """The selected architecture and those tied with it: what the verdict says is best."""
    return tuple(sorted(r["model"] for r in board.rows if r["status"] in ("best", "tied")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folds", default="auto")
    parser.add_argument("--repeats", default="auto", help="repeated cross-validation: R x K runs per model "
                        "('auto', the compare's default: 2 x 5 with --folds auto on drone_maritime)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--models", default="densenet121,inception_v3,mobilenetv2,resnet50")
    parser.add_argument("--lr", default=None, help="a number, or 'auto' for the learning-rate finder")
    parser.add_argument("--refit", action="store_true", help="also refit and test the selected model")
    parser.add_argument("--work", default="runs/bakeoff-stability-v2")
    parser.add_argument("--out", default="bakeoff_stability", help="results file name in benchmarks/results/")
    args = parser.parse_args()
    data = need_drone()
    folds = args.folds if args.folds == "auto" else int(args.folds)
    lr = args.lr if args.lr in (None, "auto") else float(args.lr)
    repeats = args.repeats if args.repeats == "auto" else int(args.repeats)
    per_seed, rows = [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.perf_counter()
        board = classbench.compare(data, models=args.models.split(","), out=Path(args.work) / f"seed-{seed}",
                                   epochs=args.epochs, img_size=args.img_size, seed=seed, folds=folds,
                                   repeats=repeats, refit=args.refit, lr=lr, progress=False)
        seconds = time.perf_counter() - start
        print(f"seed {seed}: {board.sentence}")
        per_seed.append({"seed": seed, "verdict": board.sentence, "protocol": board.protocol,
                         "selected": board.rows[0]["model"], "best_set": verdict_set(board),
                         "wall_seconds_this_call": round(seconds, 1), "rows": board.rows})
        rows += [{"seed": seed, **{k: r.get(k) for k in ("model", "status", "heldout_macro_f1", "delta", "delta_low",
                                                         "delta_high", "fold_delta_low", "fold_delta_high", "fold_mean",
                                                         "fold_std", "lr")}}
                 for r in board.rows]
        write_results(args.out, {"args": vars(args), "seeds": per_seed})  # after every seed: nothing is lost
    print_table(rows, ["seed", "model", "status", "heldout_macro_f1", "delta", "delta_low", "delta_high", "fold_mean",
                       "fold_std", "lr"])
    sets = [s["best_set"] for s in per_seed]
    same = max(sets.count(s) for s in sets)
    selected = [s["selected"] for s in per_seed]
    summary = {"same_verdict": f"{same} of {len(sets)}", "best_sets": sets, "selected": selected,
               "target_met": same == len(sets)}
    print(f"same verdict (selected + tied set) in {same} of {len(sets)} seeds: {sets}; selected: {selected}")
    write_results(args.out, {"args": vars(args), "seeds": per_seed, "summary": summary})


if __name__ == "__main__":
    main()
