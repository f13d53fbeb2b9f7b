"""Run-folder I/O: atomic writes, run folders, environment capture."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from classbench.errors import RunError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise RunError(f"{path}: cannot write here ({err.strerror}); choose a writable --out folder") from err
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    import yaml

    return atomic_write_text(path, yaml.safe_dump(_plain(obj), sort_keys=False))


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows -> CSV text (the csv module's quoting, ``\\n`` line ends): the one CSV writer of classbench's files."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def atomic_write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]) -> Path:
    """A header of ``fieldnames``, then each row's values in that order (a missing key is empty, others ignored)."""
    fieldnames = list(fieldnames)
    return atomic_write_text(path, csv_text([fieldnames, *([row.get(k, "") for k in fieldnames] for row in rows)]))


def atomic_save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (PNG unless the suffix says otherwise)."""
    buf = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buf, format=fmt, **{"dpi": 120, "bbox_inches": "tight", **kwargs})
    return atomic_write_bytes(path, buf.getvalue())


def command_line() -> str:
    """The command that started this process, as typed: ``classbench ...`` for the CLI, else the Python
    command line (``python script.py --flag``) that called the API."""
    import shlex
    import sys

    argv = sys.argv[:]
    if argv and argv[0].endswith(("classbench", "cli.py", "__main__.py")):
        argv[0] = "classbench"
    elif argv:
        argv.insert(0, "python")
    return " ".join(shlex.quote(a) for a in argv) or "python"


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file as Python values; missing or damaged: a one-line ``RunError`` naming the file."""
    return _read_parsed(path, json.loads, (json.JSONDecodeError,), "JSON", lambda err: err.msg)


def read_json_or(path: str | os.PathLike, default: Any) -> Any:
    """A JSON file that is a hint, not a record (a logger's ids, a Ray worker's note): ``default`` when it is
    missing, unreadable or damaged."""
    try:
        return read_json(path)
    except (RunError, OSError, ValueError):  # ValueError: not UTF-8
        return default


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file (a run's ``config.yaml``) as Python values, with ``read_json``'s one-line errors."""
    import yaml

    return _read_parsed(path, yaml.safe_load, (yaml.YAMLError, UnicodeDecodeError), "YAML",
                        lambda err: str(err).splitlines()[0])


def _read_parsed(path: str | os.PathLike, parse: Any, errors: tuple[type[Exception], ...], kind: str,
                 reason: Any) -> Any:
    path = Path(path)
    try:
        return parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RunError(f"{path}: not found; is this a classbench run folder?") from err
    except errors as err:
        raise RunError(f"{path}: not valid {kind} ({reason(err)}); the file is damaged, re-create it") from err


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float | None]]:
    """A run's ``metrics.csv`` as numbers (empty list when missing)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(fh)]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_name(text: str) -> str:
    """``text`` as a file or folder name: every character other than a letter, digit, ``-``, ``_`` or ``.``
    becomes ``_`` (model names as compare sub-folders, data names in eval file names, image stems in CAM files)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


RUN_MARKERS = ("config.yaml", "model.json", "metrics.csv", "compare.json", "split.csv")


def remove_own_folder(out: Path, markers: Sequence[str], what: str) -> None:
    """Delete ``out`` for ``--overwrite`` when it holds one of ``markers`` (paths a classbench ``what`` writes);
    otherwise refuse with one RunError line and delete nothing: a folder without them could be the user's data."""
    import shutil

    if not any((out / name).exists() for name in markers):
        raise RunError(f"{out}: not a classbench {what} folder, so --overwrite will not delete it; "
                       "choose another --out")
    shutil.rmtree(out)


def prepare_run_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Create a run folder; refuse a non-empty one unless ``overwrite``, which empties an old run folder
    (never a folder that is not a classbench run: that could be the user's data)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"{out}: run folder already exists; pass --overwrite, --resume {out}, or choose another --out")
        remove_own_folder(out, RUN_MARKERS, "run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RunError(f"{out}: cannot write here ({err.strerror}); choose a writable --out folder") from err
    return out


def environment_info() -> dict[str, Any]:
    """Library versions and hardware, recorded with every run."""
    from importlib import metadata

    versions = {}
    for dist in ("classbench", "torch", "torchvision", "timm", "lightning", "torchmetrics", "numpy", "pillow", "onnx", "onnxruntime"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info().name,
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return info


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says (the one reader of it): model name, feature flags, physical cores."""

    name: str
    flags: frozenset[str]
    physical_cores: int | None


def usable_cores() -> int:
    """The logical CPUs this process may run on (its affinity mask, as taskset, cgroups' cpusets and Slurm set
    it; the machine's count where the platform has no mask)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def timestamp() -> str:
    """Now, as every file classbench writes records it: ISO 8601 to the second, local time with its UTC offset."""
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")


def proc_kib_field(path: str, key: str) -> int | None:
    """A ``key:  N kB`` line of a Linux ``/proc`` file (``/proc/meminfo``'s ``MemAvailable``,
    ``/proc/self/status``'s ``VmHWM``) in bytes; None where the file or the field is missing (not Linux)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == key:
            try:
                return int(value.split()[0]) * 1024
            except (ValueError, IndexError):
                return None
    return None


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU; on systems without ``/proc/cpuinfo`` the name from ``platform`` and no flags."""
    import re

    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInfo(platform.processor() or platform.machine(), frozenset(), None)
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())
    flags = next((frozenset(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")),
                 frozenset())
    cores = set(re.findall(r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", text, re.DOTALL))
    return CpuInfo(name, flags, len(cores) or None)


def _plain(obj: Any) -> Any:
    """Convert paths/tuples/dataclasses to YAML-safe builtins."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return _json_default(obj)


def _json_default(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
