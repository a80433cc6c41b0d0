"""MNIST, read in place from the four standard IDX files, and seeded probe subsets.

The files may be gzip-compressed or not and may live in a read-only folder: nothing is
ever written next to them. Where they are missing and downloading is allowed,
torchvision's normal download fetches them into the data folder.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
ENV_DATA_DIR = "LANDSCAPE_DATA"
from .errors import MNISTFileError  # noqa: F401  (raised here, defined without imports)
from .paths import REPO_ROOT
DEFAULT_DATA_DIR = REPO_ROOT / "data"

# Stem -> (IDX magic number, shape, sha256 of the *uncompressed* bytes). Hashing the
# payload rather than the .gz makes every lossless copy (re-gzipped or unpacked) valid.
MNIST_FILES: dict[str, tuple[int, tuple[int, ...], str]] = {
    "train-images-idx3-ubyte": (2051, (60000, 28, 28), "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (2049, (60000,), "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28), "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (2049, (10000,), "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}


@dataclass(frozen=True)
class Split:
    """One split: normalised images ``x`` (N, 1, 28, 28) float32 and labels ``y`` (N,) int64."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class MNIST:
    """Both splits and the folder they were read from."""

    train: Split
    test: Split
    raw_dir: Path


@dataclass(frozen=True)
class ProbeSubset:
    """A fixed, seeded subset of one split: the samples a probe evaluates, every time.

    ``indices`` are positions in the split (sorted), so the report can say exactly which
    samples were used: ``describe()`` gives "2,048 training examples (seed 0)".
    """

    split: str
    size: int
    seed: int
    indices: Tensor
    x: Tensor
    y: Tensor

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)``, the form every probe takes."""
        return self.x, self.y

    def describe(self) -> str:
        name = "training" if self.split == "train" else "test"
        return f"{self.size:,} {name} examples (seed {self.seed})"

    def to_dict(self) -> dict:
        return {"split": self.split, "size": self.size, "seed": self.seed,
                "indices_sha256": hashlib.sha256(self.indices.numpy().tobytes()).hexdigest()[:16]}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument, else ``$LANDSCAPE_DATA``, else ``<repo>/data``."""
    if data_dir is None:
        data_dir = os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser().resolve()


def _candidate_dirs(root: Path) -> list[Path]:
    # Accept the torchvision layout (root/MNIST/raw), a raw folder itself, or root/raw.
    return [root / "MNIST" / "raw", root / "raw", root]


def find_raw_files(root: Path) -> tuple[Path, dict[str, Path], list[str]]:
    """Locate the four files under ``root``: (folder, stem -> file, missing stems)."""
    best: tuple[Path, dict[str, Path], list[str]] | None = None
    for folder in _candidate_dirs(root):
        found: dict[str, Path] = {}
        for stem in MNIST_FILES:
            for name in (stem + ".gz", stem):
                if (folder / name).is_file():
                    found[stem] = folder / name
                    break
        missing = [s for s in MNIST_FILES if s not in found]
        if best is None or len(missing) < len(best[2]):
            best = (folder, found, missing)
    assert best is not None
    return best


def read_idx(path: Path, magic: int, shape: tuple[int, ...], sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw) and check magic number, shape, size and checksum.

    Raises:
        MNISTFileError: naming the file and what is wrong with it.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise MNISTFileError(f"{path}: cannot be read or decompressed ({exc}); the file is "
                             "truncated or corrupted. Replace it with a fresh copy.") from exc
    header_len = 4 + 4 * len(shape)
    if len(raw) < header_len:
        raise MNISTFileError(f"{path}: only {len(raw)} bytes; not an IDX file (truncated?)")
    found_magic = int.from_bytes(raw[:4], "big")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(len(shape)))
    if found_magic != magic or dims != shape:
        raise MNISTFileError(f"{path}: header says magic {found_magic}, shape {dims}; "
                             f"expected magic {magic}, shape {shape}. Wrong or corrupted file.")
    expected_len = header_len + int(np.prod(shape))
    if len(raw) != expected_len:
        raise MNISTFileError(f"{path}: {len(raw)} bytes after decompression, expected "
                             f"{expected_len}; the file is truncated or padded.")
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise MNISTFileError(f"{path}: contents differ from the standard MNIST file "
                             "(sha256 mismatch); the file is corrupted.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def _download(root: Path) -> None:
    from torchvision.datasets import MNIST as TorchvisionMNIST

    for train in (True, False):
        TorchvisionMNIST(str(root), train=train, download=True)


def _missing_message(root: Path, folder: Path, missing: list[str], reason: str) -> str:
    names = ", ".join(f"{s}.gz" for s in missing)
    return (f"MNIST files missing: {names}. Looked in {folder} (and the other layouts under "
            f"{root}). {reason} Put the four standard files (gzip or unpacked) in "
            f"{root / 'MNIST' / 'raw'}, or point ${ENV_DATA_DIR} (or data_dir=) at the folder "
            "that holds MNIST/raw/.")


_CACHE: dict[tuple[Path, bool], MNIST] = {}
_LOCK = threading.Lock()


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True,
               verify: bool = True) -> MNIST:
    """Load both MNIST splits, normalised with the standard mean 0.1307 and std 0.3081.

    Args:
        data_dir: folder holding ``MNIST/raw/`` (or the raw folder itself); default
            ``$LANDSCAPE_DATA`` or ``<repo>/data``. Read in place; may be read-only.
        download: fetch missing files with torchvision's downloader into ``data_dir``.
        verify: check each file's contents against the standard checksum.

    Returns:
        :class:`MNIST` with float32 images (N, 1, 28, 28) and int64 labels. Cached per
        process, so repeated calls are free; treat the tensors as read-only.

    Raises:
        MNISTFileError: a file is missing (the message lists which and where to put them),
            truncated, or not the standard file.
    """
    root = resolve_data_dir(data_dir)
    with _LOCK:
        if (root, verify) in _CACHE:
            return _CACHE[(root, verify)]
        folder, found, missing = find_raw_files(root)
        if missing:
            if not download:
                raise MNISTFileError(_missing_message(root, folder, missing, "Downloading is off."))
            try:
                _download(root)
            except Exception as exc:  # no network, read-only folder, mirror down, ...
                raise MNISTFileError(_missing_message(
                    root, folder, missing, f"Download failed ({type(exc).__name__}: {exc}).")) from exc
            folder, found, missing = find_raw_files(root)
            if missing:
                raise MNISTFileError(_missing_message(root, folder, missing, "Download gave no files."))
        arrays = {stem: read_idx(found[stem], magic, shape, sha if verify else None)
                  for stem, (magic, shape, sha) in MNIST_FILES.items()}

        def split(prefix: str) -> Split:
            images = torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"].copy())
            labels = torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"].astype(np.int64))
            if int(labels.max()) > 9:
                raise MNISTFileError(f"{found[f'{prefix}-labels-idx1-ubyte']}: labels above 9")
            # (N, 28, 28) uint8 -> (N, 1, 28, 28) float32, standardised.
            x = (images.float().div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)).unsqueeze(1)
            return Split(x=x, y=labels)

        mnist = MNIST(train=split("train"), test=split("t10k"), raw_dir=folder)
        _CACHE[(root, verify)] = mnist
        return mnist


def probe_subset(split: Split, size: int, seed: int, name: str = "train") -> ProbeSubset:
    """A fixed subset of ``size`` samples drawn without replacement with ``seed``.

    The same (split, size, seed) always gives the same samples, independent of any
    global random state.

    Raises:
        ValueError: if ``size`` is not in [1, len(split)].
    """
    if not isinstance(size, int) or not 1 <= size <= len(split):
        raise ValueError(f"probe subset size must be an int in [1, {len(split)}], got {size!r}")
    g = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(split), generator=g)[:size].sort().values
    return ProbeSubset(split=name, size=size, seed=seed, indices=indices,
                       x=split.x[indices], y=split.y[indices])
