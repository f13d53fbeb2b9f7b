"""``ImageDataset`` (uint8 CHW tensors + class index) and ``ImageCache`` of decoded, resized images.

Cache kinds:

* ``"memory"``: one shared-memory uint8 tensor per sample list (``[N,3,S,S]`` + a filled flag per
  slot, one slot per sample: no hashing needed within a process), so images decoded in any
  DataLoader worker are hits in every worker and later epochs. Lives in /dev/shm on Linux.
* ``"disk"``: an ``np.memmap`` file under ``cache_dir`` (default ``$CLASSBENCH_CACHE`` or
  ``~/.cache/classbench``). Slots are keyed by the sha256 of each file's bytes + the image size, and
  the file name by the set of those keys, so a later run on the same files reuses it; identical
  files share a slot. Workers open the file themselves (nothing big is pickled).
  With a ``pool`` (a compare's whole split) the file is keyed by the pool's files instead, and every
  sample list inside the pool maps onto its slots: every model and fold of a compare decodes an image once.
* ``"auto"``: the pool's disk cache when a ``pool`` is given; else memory when ``N*3*S*S`` bytes fit in
  ``memory_limit`` (default: min(2 GiB, 25% of available RAM, half the free /dev/shm), shared by all
  sample lists of the cache), else disk.

Nothing holds PIL images: each is decoded, resized to a tensor and dropped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from classbench.data.imageio import load_image
from classbench.data.manifest import Sample
from classbench.data.transforms import to_uint8_tensor
from classbench.errors import ClassbenchError, DataError
from classbench.runs import file_sha256, proc_kib_field

CACHE_KINDS = ("memory", "disk", "auto")


def default_cache_dir() -> Path:
    return Path(os.environ.get("CLASSBENCH_CACHE") or Path.home() / ".cache" / "classbench")


def default_memory_limit() -> int:
    """min(2 GiB, 25% of available RAM, 50% of free shared memory); ``$CLASSBENCH_CACHE_MEMORY_MB`` overrides."""
    if os.environ.get("CLASSBENCH_CACHE_MEMORY_MB"):
        return int(float(os.environ["CLASSBENCH_CACHE_MEMORY_MB"]) * 2**20)
    available = proc_kib_field("/proc/meminfo", "MemAvailable") or 8 << 30
    shm = shared_memory_free()
    return min(2 << 30, available // 4, shm // 2 if shm is not None else 2 << 30)


def shared_memory_free() -> int | None:
    """Free bytes in /dev/shm (where the memory cache lives on Linux; small in Docker), or None."""
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


class _Store:
    """Slots for one list of files at one size: ``get(i)`` -> tensor copy or None, ``put(i, tensor)``."""

    def __init__(self, n_slots: int, slot_of: list[int], size: int, file: Path | None) -> None:
        self.slot_of, self.size, self.file = slot_of, size, file
        self.shape = (n_slots, 3, size, size)
        self._data: torch.Tensor | np.ndarray | None = None
        self._flags: torch.Tensor | np.ndarray | None = None
        if file is None:
            self._data = torch.zeros(self.shape, dtype=torch.uint8).share_memory_()
            self._flags = torch.zeros(n_slots, dtype=torch.uint8).share_memory_()
        else:
            self._open()

    def _open(self) -> None:
        flags_file = self.file.with_suffix(".flags")
        if not self.file.exists() or not flags_file.exists():
            _create_memmap(self.file, int(np.prod(self.shape)))
            _create_memmap(flags_file, self.shape[0])
        self._data = np.memmap(self.file, dtype=np.uint8, mode="r+", shape=self.shape)
        self._flags = np.memmap(flags_file, dtype=np.uint8, mode="r+", shape=(self.shape[0],))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.file is not None:  # a memmap would pickle as a full in-memory copy; reopen instead
            state["_data"] = state["_flags"] = None
        return state

    def get(self, index: int) -> torch.Tensor | None:
        if self._data is None:
            self._open()
        slot = self.slot_of[index]
        if not self._flags[slot]:
            return None
        return torch.from_numpy(np.array(self._data[slot])) if self.file else self._data[slot].clone()

    def put(self, index: int, tensor: torch.Tensor) -> None:
        if self._data is None:
            self._open()
        slot = self.slot_of[index]
        if self.file is None:
            self._data[slot].copy_(tensor)
        else:
            self._data[slot] = tensor.numpy()
        self._flags[slot] = 1  # written after the pixels: a slot is never marked before it is complete

    @property
    def filled(self) -> int:
        if self._data is None:
            self._open()
        return int(self._flags.sum())


class ImageCache:
    """Cache of decoded images resized to ``img_size``; see the module docstring for the kinds."""

    def __init__(
        self, img_size: int, kind: str = "auto", cache_dir: str | os.PathLike | None = None,
        memory_limit: int | None = None, pool: Sequence[str | os.PathLike] | None = None,
    ) -> None:
        if kind not in CACHE_KINDS:
            raise ClassbenchError(f"cache '{kind}': unknown; choose one of {', '.join(CACHE_KINDS)}")
        self.img_size, self.kind = int(img_size), kind
        self.pool = [str(p) for p in pool] if pool is not None and kind != "memory" else None
        self._pool_index: dict[str, int] | None = None
        self._pool_keys: list[str] = []
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.memory_limit = default_memory_limit() if memory_limit is None else int(memory_limit)
        self._stores: dict[tuple[str, ...], _Store] = {}
        self._memory_used = 0

    def bind(self, paths: Sequence[str | os.PathLike]) -> _Store:
        """The store for this list of files (created on first use; the same list gives the same store)."""
        key = tuple(str(p) for p in paths)
        if key not in self._stores:
            self._stores[key] = self._new_store(key)
        return self._stores[key]

    def _new_store(self, paths: tuple[str, ...]) -> _Store:
        if self.pool is not None:
            store = self._pool_store(paths)
            if store is not None:
                return store
        nbytes = len(paths) * 3 * self.img_size**2
        use_memory = self.kind == "memory" or (
            self.kind == "auto" and self._memory_used + nbytes <= self.memory_limit
        )
        if use_memory:
            free = shared_memory_free()
            if free is not None and nbytes > free:
                raise DataError(
                    f"memory cache needs {nbytes / 2**30:.2f} GiB of shared memory but /dev/shm has "
                    f"{free / 2**30:.2f} GiB free; use --cache disk (or enlarge /dev/shm, e.g. docker --shm-size)"
                )
            self._memory_used += nbytes
            return _Store(len(paths), list(range(len(paths))), self.img_size, None)
        keys = [_content_key(p) for p in paths]
        return self._disk_store(sorted(set(keys)), keys)

    def _disk_store(self, unique: list[str], keys: list[str]) -> _Store:
        """A memmap with one slot per content key in ``unique``; ``keys`` name each sample's slot."""
        index = {k: i for i, k in enumerate(unique)}
        digest = hashlib.sha256(("\n".join([str(self.img_size), *unique])).encode()).hexdigest()[:24]
        file = self.cache_dir / f"images-{digest}-{self.img_size}px.u8"
        try:
            return _Store(len(unique), [index[k] for k in keys], self.img_size, file)
        except OSError as err:
            raise DataError(f"{file}: cannot create the image cache ({err}); set CLASSBENCH_CACHE to a writable "
                            "folder or use --cache memory") from err

    def _pool_store(self, paths: tuple[str, ...]) -> _Store | None:
        """A store inside the pool's one disk cache (None when a path is not in the pool): every run of a
        compare (each model, each fold) binds its files to slots of the same file, so each image is decoded
        once per compare and size, and found again by any later compare of the same files."""
        if self._pool_index is None:
            key_of = {p: _content_key(p) for p in self.pool}
            self._pool_keys = sorted(set(key_of.values()))
            self._pool_index = key_of
        if any(p not in self._pool_index for p in paths):
            return None
        return self._disk_store(self._pool_keys, [self._pool_index[p] for p in paths])

    def preload(
        self, samples: Sequence[Sample | str | os.PathLike], progress: Callable[[int, int], None] | None = None
    ) -> _Store:
        """Decode every not-yet-cached file once; ``progress(done, total)`` after each file."""
        paths = [s.path if isinstance(s, Sample) else Path(s) for s in samples]
        store = self.bind(paths)
        for i, path in enumerate(paths):
            if store.get(i) is None:
                store.put(i, to_uint8_tensor(load_image(path), self.img_size))
            if progress is not None:
                progress(i + 1, len(paths))
        return store


def _content_key(path: str) -> str:
    try:
        return file_sha256(path)
    except OSError:
        return "missing:" + path  # the load later raises ImageLoadError naming the file


def _create_memmap(file: Path, nbytes: int) -> None:
    """Create a zero-filled file atomically (temp + rename), so concurrent creators never see half a file."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.truncate(max(nbytes, 1))
    os.replace(tmp, file)


class ImageDataset(Dataset):
    """``(uint8 tensor [3,S,S], class index)`` per sample; a failing file raises ``ImageLoadError`` naming it."""

    def __init__(
        self,
        samples: Sequence[Sample],
        class_to_idx: dict[str, int],
        img_size: int,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache: ImageCache | None = None,
    ) -> None:
        self.paths = [s.path for s in samples]
        unknown = sorted({s.label for s in samples} - set(class_to_idx))
        if unknown:
            raise DataError(f"label(s) {', '.join(map(repr, unknown))} not in the class list; re-create the split")
        self.targets = [class_to_idx[s.label] for s in samples]
        self.img_size, self.augment = int(img_size), augment
        if cache is not None and cache.img_size != self.img_size:
            raise ClassbenchError(f"cache is for {cache.img_size}px images, dataset wants {self.img_size}px")
        self.store = cache.bind(self.paths) if cache is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        tensor = self.store.get(index) if self.store is not None else None
        if tensor is None:
            tensor = to_uint8_tensor(load_image(self.paths[index]), self.img_size)
            if self.store is not None:
                self.store.put(index, tensor)
        if self.augment is not None:
            tensor = self.augment(tensor)
        return tensor, self.targets[index]
