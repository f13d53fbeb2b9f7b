"""``compare --engine ray`` on a local Ray instance with 2 CPUs: the same verdict as the local engine, a killed
worker retried and resumed, a user-data failure reported while the other runs finish, bad addresses and
impossible resource requests as one line, an interrupted driver resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import classbench
from classbench.comparison.ray_engine import worker_of
from classbench.errors import ClassbenchError, RunError
from tests.synth import make_class_folders, wait_for_file

TINY = ["test_efficientnet", "resnet18"]
OPTIONS = {"epochs": 3, "img_size": 32, "batch_size": 8, "folds": 2, "refit": False, "progress": False,
           "checkpoint_every": 0, "label_smoothing": 0.05}  # label_smoothing: an option with no compare flag
NUMBERS = ("model", "status", "heldout_macro_f1", "delta", "delta_low", "delta_high", "fold_delta_low",
           "fold_delta_high", "fold_mean", "fold_std")


def _numbers(out: Path) -> list[dict[str, str]]:
    with open(out / "leaderboard.csv") as fh:
        return [{k: row[k] for k in NUMBERS} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("ray") / "data", {"a": 60, "b": 60, "c": 24})


@pytest.fixture(scope="module")
def local_numbers(data, tmp_path_factory) -> list[dict[str, str]]:
    out = tmp_path_factory.mktemp("local") / "cmp"
    classbench.compare(data, models=TINY, out=out, **OPTIONS)
    return _numbers(out)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_an_address_that_does_not_answer_is_one_line_before_anything_is_written(data, tmp_path) -> None:
    # (a plain TCP connect with a 3 s timeout, before ray.init, which would retry for a minute)
    with pytest.raises(ClassbenchError, match=r"the Ray cluster at 127\.0\.0\.1:9 does not answer"):
        classbench.compare(data, models=TINY, out=tmp_path / "cmp", engine="ray", ray_address="127.0.0.1:9", **OPTIONS)
    assert not (tmp_path / "cmp").exists()  # no half-made compare folder
    with pytest.raises(ClassbenchError, match="expected HOST:PORT"):
        classbench.compare(data, models=TINY, out=tmp_path / "cmp", engine="ray", ray_address="nowhere", **OPTIONS)


def test_ray_missing_is_one_line_naming_the_extra(data, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ClassbenchError, match=r'pip install "classbench\[ray\]"'):
        classbench.compare(data, models=TINY, out=tmp_path / "cmp", engine="ray", **OPTIONS)
    assert not (tmp_path / "cmp").exists()


def test_gpus_the_cluster_lacks_are_refused_with_what_it_offers(ray_cluster, data, tmp_path) -> None:
    with pytest.raises(ClassbenchError, match=r"no Ray node can hold a run of 1 GPU.*offers 1 node\(s\): 2 CPUs"):
        classbench.compare(data, models=TINY, out=tmp_path / "cmp", engine="ray", gpus_per_run=1, **OPTIONS)


def test_a_killed_worker_is_retried_and_the_verdict_is_the_local_engines(ray_cluster, data, local_numbers,
                                                                         tmp_path) -> None:
    out = tmp_path / "cmp"
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            classbench.compare(data, models=TINY, out=out, engine="ray", cpus_per_run=1, **OPTIONS)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            errors.append(err)

    driver = threading.Thread(target=drive)
    driver.start()
    victim = out / "cv" / "resnet18" / "fold-1"
    deadline = time.monotonic() + 300
    while not (victim / "last.ckpt").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    first_pid = worker_of(victim).get("pid")
    assert first_pid and not (victim / "summary.json").is_file(), "the run finished before it could be killed"
    os.kill(first_pid, signal.SIGKILL)
    driver.join(600)
    assert not driver.is_alive() and not errors, errors
    assert worker_of(victim)["pid"] != first_pid  # Ray started the task again, in another process ...
    with open(victim / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]  # ... which resumed from last.ckpt
    assert _numbers(out) == local_numbers  # the engine never changes the verdict
    config = (out / "cv" / "test_efficientnet" / "fold-2" / "config.yaml").read_text()
    assert "label_smoothing: 0.05" in config and "seed: 1" in config  # every option, and fold 2's own seed


def test_a_user_data_failure_is_reported_and_the_other_runs_finish(ray_cluster, data, tmp_path) -> None:
    from classbench.comparison import replicates as R
    from classbench.comparison.ray_engine import train_on_ray
    from classbench.data.split import split

    out = tmp_path / "cmp"
    split(data, val=0.2, test=0.1, seed=0, out=out / "split.csv")
    jobs = R.plan(out, out / "split.csv", TINY, TINY, folds=2, seeds=1, seed=0, inner_val=0.2)
    broken = out / "cv" / "resnet18" / "fold-2"
    broken.mkdir(parents=True)
    (broken / "last.ckpt").write_bytes(b"not a checkpoint")  # resuming this run fails for a data reason
    options = {"epochs": 1, "img_size": 32, "batch_size": 8, "progress": False, "checkpoint_every": 0}
    with pytest.raises(RunError) as caught:
        train_on_ray(jobs, lambda job: options, out, cpus_per_run=1, progress=False)
    message = str(caught.value)
    assert message.startswith("1 of 4 runs failed (resnet18 fold 2/2: ") and "no config.yaml" in message
    assert "\n" not in message and "re-run the same compare to resume" in message
    scored = {(j.name, j.label): j.predictions.is_file() for j in jobs}
    assert sum(scored.values()) == 3 and not scored[("resnet18", "fold 2/2")]  # the others went on


@pytest.mark.slow
def test_an_interrupted_ray_driver_resumes(data, tmp_path) -> None:
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "classbench.cli", "compare", str(data), "--models", ",".join(TINY), "--epochs", "3",
           "--img-size", "32", "--batch-size", "8", "--folds", "2", "--no-refit", "--checkpoint-every", "0",
           "--engine", "ray", "--cpus-per-run", "2", "--out", str(out)]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    first = out / "cv" / TINY[0] / "fold-1" / "summary.json"
    wait_for_file(first, proc, 400, poll=0.1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C on the driver
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, (proc.returncode, stderr)
    assert not (out / "leaderboard.csv").exists()
    kept = first.stat().st_mtime_ns
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert first.stat().st_mtime_ns == kept and len(_numbers(out)) == 2
    assert json.loads((out / "verdict.json").read_text())["protocol"].startswith("2-fold")
