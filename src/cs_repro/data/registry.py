"""Dataset specs, the in-memory dataset type, and the shared file-finding / checksum helpers.

Each dataset module (idx.py, cifar.py) registers one `DatasetSpec` per dataset in `DATASETS`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from cs_repro.errors import UserError
from cs_repro.registry import Registry

# Where downloads go when the user asked for `download` but gave no root.
DEFAULT_DOWNLOAD_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cs_repro" / "data"


@dataclass(frozen=True)
class Checksum:
    """An expected digest of one file.

    `of` says which bytes are hashed:
      "decompressed": the content after gunzip (equal for any re-compression of the same data);
      "file": the bytes on disk as distributed upstream (for a .gz file: the compressed bytes).
    """

    algorithm: str  # "sha256" or "md5"
    of: str  # "decompressed" or "file"
    hexdigest: str

    def digest(self, data: bytes) -> str:
        return hashlib.new(self.algorithm, data).hexdigest()


#: ImageNet's per-channel statistics, which open_lth normalises CIFAR-10 with (params `normalization`).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]  # per channel, pixel values scaled to [0, 1]
    std: tuple[float, ...]
    files: tuple[str, ...]  # expected file names (as distributed upstream)
    checksums: dict[str, Checksum]  # file name -> expected digest
    loader: Callable[..., "RawDataset"] = field(repr=False, compare=False)
    class_names: tuple[str, ...] = ()
    # Training images as distributed: the params check works out batches per epoch from it before any data
    # is read (0 = not known; then only the run itself checks).
    train_size: int = 0
    # Datasets too large for memory (ImageNet): root -> an index of image files and labels, which `prepare`
    # writes instead of the pixels; training streams the files (data/streaming.py). None: loaded whole.
    index: Callable[..., dict] | None = field(default=None, repr=False, compare=False)

    @property
    def streamed(self) -> bool:
        return self.index is not None

    def normalization(self, kind: str = "dataset") -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel: the dataset's own, or ImageNet's ('imagenet', 3-channel images only)."""
        if kind == "dataset":
            return self.mean, self.std
        if kind == "imagenet" and self.image_shape[0] == 3:
            return IMAGENET_MEAN, IMAGENET_STD
        raise UserError(f"normalization {kind!r} does not apply to {self.name} ({self.image_shape[0]} channel(s))")

    def load(self, root: Path | str | None = None, verify_checksums: bool = True, download: bool = False) -> "RawDataset":
        """Read the whole dataset into memory (uint8 images, int64 labels)."""
        return self.loader(self, None if root is None else Path(root).expanduser(), verify_checksums, download)


@dataclass
class RawDataset:
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor
    test_labels: torch.Tensor
    spec: DatasetSpec


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def load_dataset(
    name: str, root: Path | str | None = None, verify_checksums: bool = True, download: bool = False
) -> RawDataset:
    """Look up `name` in DATASETS and load it; every failure a user can fix is a UserError."""
    return DATASETS.get(name).load(root, verify_checksums, download)


def verify(spec: DatasetSpec, path: Path, name: str, raw: bytes, content: bytes, compressed: bool) -> None:
    """Compare the digest of one file with the spec; `raw` are the bytes on disk, `content` after gunzip."""
    expected = spec.checksums.get(name)
    if expected is None:
        return
    if expected.of == "decompressed":
        data = content
    elif compressed or not name.endswith(".gz"):
        data = raw
    else:
        # The digest is of the upstream .gz file but only an uncompressed copy exists: nothing to compare.
        import warnings

        warnings.warn(
            f"{spec.name}: cannot verify {path} (the known {expected.algorithm} is of the compressed "
            f"{name}); keep the .gz file next to it to have it checked",
            stacklevel=3,
        )
        return
    got = expected.digest(data)
    if got != expected.hexdigest:
        what = "decompressed content" if expected.of == "decompressed" else "file"
        raise UserError(
            f"{spec.name}: checksum mismatch for {path} ({expected.algorithm} of the {what}): expected "
            f"{expected.hexdigest}, got {got}; replace the file with an intact copy, or set "
            f"data.verify_checksums: false for a custom copy"
        )


def first_complete_dir(candidates: Sequence[Path], present: Callable[[Path], bool]) -> Path | None:
    """The first directory in `candidates` for which `present(dir)` is true (files are never mixed across dirs)."""
    for d in candidates:
        try:
            if d.is_dir() and present(d):
                return d
        except OSError:
            continue
    return None


def download_with(spec: DatasetSpec, root: Path | None, fetch: Callable[[Path], None]) -> Path:
    """Run torchvision's downloader into `root` (or the default cache), turning any failure into a UserError."""
    target = root if root is not None else DEFAULT_DOWNLOAD_ROOT
    try:
        target.mkdir(parents=True, exist_ok=True)
        fetch(target)
    except UserError:
        raise
    except Exception as e:  # network errors come as URLError, RuntimeError, OSError, ...
        msg = " ".join(str(e).split())[:300]
        raise UserError(
            f"{spec.name}: download into {target} failed ({type(e).__name__}: {msg}); check the internet "
            f"connection, or set data.root to a folder holding {', '.join(spec.files)}"
        ) from None
    return target


def missing_message(spec: DatasetSpec, searched: Sequence[Path], extra_ways: Sequence[str] = (), download: bool = False) -> str:
    where = ", ".join(str(p) for p in searched) if searched else "(no folder: data.root is empty)"
    ways = [f"set data.root to a folder holding {', '.join(spec.files)}", *extra_ways]
    if not download:
        ways.append("set data.download: true where the internet is reachable")
    if len(ways) > 1:
        how = ", ".join(ways[:-1]) + ", or " + ways[-1]
    else:
        how = ways[0]
    return f"{spec.name}: files not found in {where}; {how}"


def missing_in_root(spec: DatasetSpec, root: Path, lacking: Sequence[str], also_searched: Sequence[Path] = (),
                    download: bool = False) -> str:
    """One line for a user-named data root that does not hold the dataset: which files it lacks."""
    if not root.is_dir():
        return (f"{spec.name}: data.root {root} does not exist (or is not a folder); point data.root at the folder "
                f"holding {', '.join(spec.files)}, or set it to '' for the default place")
    also = f" (also looked in {', '.join(map(str, also_searched))})" if also_searched else ""
    more = "" if download else "; or set data.download: true where the internet is reachable"
    return (f"{spec.name}: data.root {root} lacks {', '.join(lacking)}{also}; put the file(s) there, point data.root "
            f"elsewhere, or set it to '' for the default place{more}")
