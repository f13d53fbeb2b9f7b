"""The report's columns: the leaderboard's (header and number kind, shown by ``formatting.fmt``) and their order
in the verdict table."""

from __future__ import annotations

# leaderboard column -> (header, kind); kind picks the number format
COLUMNS = {"model": ("model", "text"), "architecture": ("architecture", "text"), "params": ("params", "params"),
           "img_size": ("img size", "int"), "train_seconds": ("train time", "sec"),
           "train_images_per_s": ("train img/s", "rate"), "infer_ms_batch1": ("infer ms (batch 1)", "ms"),
           "infer_images_per_s_batch32": ("infer img/s (batch 32)", "rate"), "val_acc": ("val acc", "score"),
           "val_macro_f1": ("val macro-F1", "score"), "val_balanced_acc": ("val bal. acc", "score"),
           "test_acc": ("test acc", "score"), "test_macro_f1": ("test macro-F1", "score"),
           "test_balanced_acc": ("test bal. acc", "score"), "worst_class_recall": ("worst-class recall", "score"),
           "worst_class": ("worst class", "text"), "ece": ("ECE", "score"), "run_dir": ("run folder", "text"),
           "status": ("verdict", "text"), "heldout_macro_f1": ("held-out macro-F1", "score"),
           "delta": ("\u0394 to the top", "score"), "delta_low": ("\u0394 95% low", "score"),
           "delta_high": ("\u0394 95% high", "score"),
           "fold_delta_low": ("\u0394 95% low (folds)", "score"), "fold_delta_high": ("\u0394 95% high (folds)", "score"),
           "fold_mean": ("fold mean", "score"),
           "fold_std": ("fold std", "score"), "fold_low": ("fold 95% low", "score"), "fold_high": ("fold 95% high", "score"),
           "replicates": ("runs", "int"), "lr": ("learning rate", "text"),
           "heldout_worst_class_recall": ("held-out worst recall", "score"),
           "heldout_worst_class": ("held-out worst class", "text"),
           **{f"{k}_{end}": (f"{label} 95% {end}", "score") for k, label in (
               ("test_acc", "test acc"), ("test_macro_f1", "test macro-F1"), ("test_balanced_acc", "test bal. acc"))
              for end in ("low", "high")}}
VERDICT_ORDER = ["model", "status", "heldout_macro_f1", "delta", "delta_low", "delta_high", "fold_delta_low",
                 "fold_delta_high", "fold_mean", "fold_std",
                 "fold_low", "fold_high", "heldout_worst_class_recall", "heldout_worst_class", "test_macro_f1",
                 "test_macro_f1_low", "test_macro_f1_high", "test_balanced_acc", "test_balanced_acc_low",
                 "test_balanced_acc_high", "test_acc", "test_acc_low", "test_acc_high", "worst_class_recall",
                 "worst_class", "ece", "params", "img_size", "lr", "replicates", "train_seconds",
                 "train_images_per_s", "infer_ms_batch1", "infer_images_per_s_batch32", "architecture", "run_dir"]
