"""Resuming: when last.ckpt is written (interval, new best, final epoch) and a training order a resumed run repeats."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import classbench
from classbench.benchmark import checkpoint_writes
from classbench.errors import Interrupted, RunError
from classbench.training import resume
from classbench.training.callbacks import EpochSeed, LastCheckpoint, checkpoint_due
from classbench.training.loaders import EpochSampler
from tests.synth import make_class_folders, wait_for_file


class TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SeeCheckpoint(L.Callback):
    """At each epoch's start: the epoch stored in last.ckpt so far (None while there is none)."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stored = torch.load(self.path, weights_only=True)["epoch"] if self.path.exists() else None
        self.seen.append(stored)


def _fit(tmp_path: Path, every_seconds: float, epochs: int = 4, recorder: L.Callback | None = None) -> tuple[list, int]:
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    see = SeeCheckpoint(tmp_path / "last.ckpt")
    callbacks = [see, *([recorder] if recorder else []), LastCheckpoint(tmp_path, every_seconds, recorder)]
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(TinyModule(), DataLoader(data, batch_size=8))
    return see.seen, torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"]


def test_zero_interval_writes_last_ckpt_after_every_epoch(tmp_path) -> None:
    seen, final = _fit(tmp_path, 0)
    assert seen == [None, 0, 1, 2] and final == 3  # a run killed in epoch k resumes after epoch k-1


def test_long_interval_writes_only_after_the_final_epoch(tmp_path) -> None:
    seen, final = _fit(tmp_path, 3600)
    assert seen == [None, None, None, None] and final == 3


@pytest.mark.parametrize(("since", "every", "final", "due"), [
    (10.0, 60.0, False, False), (61.0, 60.0, False, True), (0.1, 0.0, False, True), (1.0, 60.0, True, True)])
def test_checkpoint_due(since: float, every: float, final: bool, due: bool) -> None:
    assert checkpoint_due(since, every, final) is due


def test_bench_counts_the_writes_the_policy_makes() -> None:
    assert checkpoint_writes(10, 5.0, 0) == 10  # every epoch
    assert checkpoint_writes(10, 5.0, 60.0) == 1  # a 50 s run: only the final write
    assert checkpoint_writes(10, 30.0, 60.0) == 5  # every other epoch (the timer restarts at each write)
    assert checkpoint_writes(10, 50.0, 60.0) == 5  # 50 s after a write is not yet due: every other epoch
    assert checkpoint_writes(7, 25.0, 60.0) == 3  # every third epoch (3, 6) and the last (7)
    assert checkpoint_writes(10, 120.0, 60.0) == 10  # epochs longer than the interval: every epoch


def test_checkpoint_writes_matches_the_policy() -> None:
    """Simulate LastCheckpoint's rule epoch by epoch and compare with bench's count."""
    for epochs, epoch_s, every in [(10, 30.0, 60.0), (10, 50.0, 60.0), (20, 40.0, 60.0), (7, 25.0, 60.0), (5, 7.0, 0.0)]:
        since, writes = 0.0, 0
        for epoch in range(epochs):
            since += epoch_s
            if checkpoint_due(since, every, epoch == epochs - 1):
                since, writes = 0.0, writes + 1
        assert checkpoint_writes(epochs, epoch_s, every) == writes, (epochs, epoch_s, every)


class ImprovesAtEpoch1(L.Callback):
    """Stands in for RunRecorder: a new best model at epoch index 1."""

    best_epoch: int | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            self.best_epoch = 2


def test_a_new_best_model_is_followed_by_a_checkpoint(tmp_path) -> None:
    """A new model.safetensors is followed by last.ckpt at the same epoch's end, so a resumed run's best model
    is one of its own epochs."""
    seen, _ = _fit(tmp_path, 3600, recorder=ImprovesAtEpoch1())
    assert seen == [None, None, 1, 1]


@pytest.mark.parametrize("text, message", [("args: [unclosed\n", "not valid YAML"),
                                           ("- just\n- a list\n", "no 'args' mapping")])
def test_resuming_from_a_damaged_config_is_one_line(tmp_path, text: str, message: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(text)
    with pytest.raises(RunError, match=message) as err:
        resume(run, progress=False)
    assert str(run / "config.yaml") in str(err.value) and "\n" not in str(err.value)


def test_resuming_a_finished_run_says_so(tmp_path) -> None:
    data = make_class_folders(tmp_path / "d", {"a": 12, "b": 12})
    run = classbench.train(data, model="test_efficientnet", out=tmp_path / "run", epochs=1, img_size=32, batch_size=4,
                           progress=False)
    rows = (run.path / "metrics.csv").read_text()
    with pytest.raises(RunError, match="already finished"):
        resume(run.path, progress=False)
    assert (run.path / "metrics.csv").read_text() == rows


@pytest.mark.slow
def test_ctrl_c_stops_with_the_resume_command_and_keeps_the_run(tmp_path) -> None:
    data = make_class_folders(tmp_path / "d", {"a": 150, "b": 150})
    run = tmp_path / "run"
    # 30 epochs (~1.5 s each here): the SIGINT lands mid-run even when this process is scheduled late
    cmd = [sys.executable, "-m", "classbench.cli", "train", str(data), "--model", "test_efficientnet", "--epochs", "30",
           "--img-size", "32", "--batch-size", "2", "--checkpoint-every", "0", "--out", str(run)]
    # a shell that starts the suite with `&` (no job control) makes it ignore SIGINT, and children inherit that:
    # give the child the default disposition so that Python installs its KeyboardInterrupt handler
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_file(run / "last.ckpt", proc, 240)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-2000:]
    assert f"classbench train --resume {run}" in " ".join(output.split()) and "Traceback" not in output
    assert (run / "last.ckpt").is_file() and not (run / "summary.json").exists()


def test_ctrl_c_while_the_progress_display_restarts_still_offers_the_resume(tmp_path, monkeypatch) -> None:
    """The CI failure this reproduces: the SIGINT landed while Lightning restarted rich's display for the next epoch,
    after the refresh thread was made and before it started; stopping the display then joined an unstarted thread."""
    from lightning.pytorch.callbacks.progress import rich_progress

    starts = []

    def start_then_interrupt(thread) -> None:
        starts.append(thread)
        if len(starts) == 3:  # the display made at train start, restarted for epoch 2, then for epoch 3: Ctrl-C
            raise KeyboardInterrupt

    data = make_class_folders(tmp_path / "d", {"a": 12, "b": 12})
    monkeypatch.setattr(rich_progress._RefreshThread, "start", start_then_interrupt)
    with pytest.raises(Interrupted, match="classbench train --resume") as stopped:
        classbench.train(data, model="test_efficientnet", out=tmp_path / "run", epochs=3, img_size=32, batch_size=4,
                         checkpoint_every=0)
    assert stopped.value.exit_code == 130 and len(starts) == 3
    assert (tmp_path / "run" / "last.ckpt").is_file() and not (tmp_path / "run" / "summary.json").exists()


def test_ctrl_c_before_training_began_removes_the_fresh_run_folder(tmp_path, monkeypatch) -> None:
    """Ctrl-C while the images are being cached: no config, no checkpoint, so nothing could resume; the folder
    this run made goes, and the message does not advertise a resume."""
    import classbench.training.loaders as loaders

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    data = make_class_folders(tmp_path / "d", {"a": 12, "b": 12})
    monkeypatch.setattr(loaders, "_preload", interrupted)
    with pytest.raises(Interrupted, match="before training began; nothing was kept") as stopped:
        classbench.train(data, model="test_efficientnet", out=tmp_path / "run", epochs=1, img_size=32, progress=False)
    assert "--resume" not in str(stopped.value) and stopped.value.exit_code == 130
    assert not (tmp_path / "run").exists()


def test_training_order_depends_only_on_seed_and_epoch() -> None:
    """What makes a resumed epoch repeat the uninterrupted one: the order is recomputed from (seed, epoch)."""
    a, b = EpochSampler(50, seed=7), EpochSampler(50, seed=7)
    b.set_epoch(3)
    b.set_epoch(1)
    a.set_epoch(1)
    assert list(a) == list(b) and sorted(a) == list(range(50))  # a permutation, the same one
    a.set_epoch(2)
    assert list(a) != list(b)  # a new order each epoch
    rare = EpochSampler(100, seed=0, weights=[9.0] * 10 + [1.0] * 90)  # --balance sampler: 10 rare samples
    drawn = list(rare)
    assert len(drawn) == 100 and sum(i < 10 for i in drawn) > 30  # half the weight: ~50 draws of 100


def test_resumed_epoch_order_is_set_before_worker_processes_ask_for_indices() -> None:
    """With worker processes the loader reads the sampler as soon as it is iterated, before Lightning's
    set_epoch of the resumed epoch: EpochSeed sets it while last.ckpt is being loaded."""
    sampler = EpochSampler(40, seed=5)
    loader = DataLoader(TensorDataset(torch.arange(40)), batch_size=40, sampler=sampler, num_workers=1)
    EpochSeed(5, sampler).on_load_checkpoint(None, None, {"epoch": 2})  # last.ckpt written at the end of epoch 2
    (first_batch,) = next(iter(loader))
    expected = EpochSampler(40, seed=5)
    expected.set_epoch(3)
    assert first_batch.tolist() == list(expected)


def test_hint_files_fall_back_when_missing_damaged_or_not_utf8(tmp_path) -> None:
    """read_json_or: a logger's ids or a Ray worker's note never stops a run; a record (read_json) does, in one line."""
    from classbench.runs import read_json, read_json_or

    good, bad, binary = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "binary.json"
    good.write_text('{"run_id": "abc"}')
    bad.write_text('{"run_id": ')
    binary.write_bytes(b"\xff\xfe\x00{")
    assert read_json_or(good, {}) == {"run_id": "abc"}
    assert [read_json_or(p, {}) for p in (bad, binary, tmp_path / "missing.json")] == [{}, {}, {}]
    with pytest.raises(RunError, match="not valid JSON"):
        read_json(bad)
