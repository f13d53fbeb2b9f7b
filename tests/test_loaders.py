"""Training loaders: the continuous loader keeps its workers preparing batches across epochs."""

from __future__ import annotations

import multiprocessing
import os
import time

import torch
import yaml
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

import classbench
from classbench.data.manifest import Manifest
from classbench.models import read_state_dict
from classbench.training.loaders import ContinuousLoader, build_loaders
from tests.synth import make_class_folders


class CountingDataset(Dataset):
    """Items are ``(index, worker pid)``; a shared counter records how many items were prepared."""

    def __init__(self, n: int) -> None:
        self.n, self.fetched = n, multiprocessing.get_context("fork").Value("i", 0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int, int]:
        with self.fetched.get_lock():
            self.fetched.value += 1
        return index, os.getpid()


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_each_pass_is_one_reshuffled_epoch_from_the_same_workers() -> None:
    data = CountingDataset(10)
    batches = BatchSampler(RandomSampler(data, generator=torch.Generator().manual_seed(0)), 3, drop_last=True)
    loader = ContinuousLoader(data, batches, num_workers=2, multiprocessing_context="fork")
    passes = [[b for b in loader] for _ in range(3)]
    assert all(len(p) == len(loader) == 3 for p in passes)
    orders = [torch.cat([b[0] for b in p]).tolist() for p in passes]
    assert all(len(set(order)) == 9 for order in orders)  # no index twice within a pass
    assert len({tuple(order) for order in orders}) == 3  # reshuffled every pass
    pids = {pid for p in passes for b in p for pid in b[1].tolist()}
    assert len(pids) == 2 and os.getpid() not in pids  # the same two workers served every pass
    loader.close()


def test_workers_prepare_the_next_epoch_while_the_loop_is_elsewhere() -> None:
    data = CountingDataset(12)
    batches = BatchSampler(RandomSampler(data, generator=torch.Generator().manual_seed(0)), 4, drop_last=False)
    continuous = ContinuousLoader(data, batches, num_workers=2, prefetch_factor=2, multiprocessing_context="fork")
    assert len(list(continuous)) == 3
    # 2 workers x 2 batches were handed out beyond the pass: prepared without being asked for
    assert _wait_for(lambda: data.fetched.value >= 12 + 4 * 4)
    continuous.close()

    plain_data = CountingDataset(12)
    plain = DataLoader(plain_data, batch_size=4, shuffle=True, num_workers=2, persistent_workers=True,
                       multiprocessing_context="fork")
    assert len(list(plain)) == 3
    time.sleep(0.5)
    assert plain_data.fetched.value == 12  # a plain loader's workers wait for the next epoch to ask


def test_build_loaders_is_seeded_and_continuous_only_with_workers(tmp_path) -> None:
    data = make_class_folders(tmp_path / "d", {"a": 12, "b": 12})
    from classbench.data.split import training_split

    manifest: Manifest = training_split(data, val=0.25, test=0.0, seed=1, out=tmp_path / "split.csv").manifest

    def labels(workers: int, continuous: bool) -> tuple[bool, list[int]]:
        loaders = build_loaders(manifest, 16, 4, "light", "none", "memory", workers, seed=5, on_gpu=False,
                                progress=False, continuous=continuous)
        seen = [int(y) for _ in range(2) for _, ys in loaders.train for y in ys]
        val = [int(y) for _, ys in loaders.val for y in ys]
        loaders.close()
        assert sorted(val) == sorted(manifest.class_to_idx[s.label] for s in manifest.subset("val"))
        return loaders.continuous, seen

    first, second = labels(1, True), labels(1, True)
    assert first[0] is True and first == second  # same seed, same order
    assert len(first[1]) == 2 * (len(manifest.subset("train")) // 4 * 4)  # two full epochs (last batch dropped)
    assert labels(0, True)[0] is False  # nothing to run ahead without worker processes
    assert labels(1, False)[0] is False


def test_training_with_workers_uses_the_continuous_loader_and_stays_reproducible(tmp_path) -> None:
    data = make_class_folders(tmp_path / "d", {"a": 16, "b": 16})
    options = {"model": "test_efficientnet", "epochs": 2, "img_size": 32, "batch_size": 8, "workers": 1,
               "progress": False, "seed": 0}
    runs = [classbench.train(data, out=tmp_path / name, **options) for name in ("a", "b")]
    config = yaml.safe_load((runs[0].path / "config.yaml").read_text())
    assert config["resolved"]["continuous_loader"] is True and config["resolved"]["workers"] == 1
    assert [r.summary["epochs_run"] for r in runs] == [2, 2]
    weights = [read_state_dict(r.path) for r in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # seeded workers, same batches
