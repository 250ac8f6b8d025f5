"""Reader for the IDX format (MNIST, Fashion-MNIST), gzip-compressed or plain, and their dataset specs.

IDX header: two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of
dimensions, then one big-endian uint32 per dimension; the data follows, row-major.
Labels files have magic 2049 (1 dim), image files 2051 (3 dims).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import torch

from cs_repro.errors import UserError
from cs_repro.data.registry import (
    DATASETS,
    Checksum,
    DatasetSpec,
    RawDataset,
    download_with,
    first_complete_dir,
    missing_in_root,
    missing_message,
    verify,
)

LABELS_MAGIC = 2049
IMAGES_MAGIC = 2051
GZIP_MAGIC = b"\x1f\x8b"

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_file_bytes(path: Path) -> tuple[bytes, bytes, bool]:
    """(bytes on disk, content after gunzip, whether it was gzip). A `.gz` name must hold gzip data."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); check the file's permissions") from None
    is_gz = raw[:2] == GZIP_MAGIC
    if path.name.endswith(".gz") and not is_gz:
        raise UserError(f"{path} is not a valid gzip file; replace it with an intact copy")
    if not is_gz:
        return raw, raw, False
    try:
        return raw, gzip.decompress(raw), True
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path} is a corrupted or truncated gzip file ({e}); replace it with an intact copy") from None


def parse_idx(content: bytes, expected_magic: int, path: Path | str = "<bytes>") -> torch.Tensor:
    """Parse an uncompressed IDX byte string of unsigned bytes into a uint8 tensor of its dims."""
    if len(content) < 4:
        raise UserError(f"{path} is truncated (no IDX header); replace it with an intact copy")
    (magic,) = struct.unpack(">I", content[:4])
    if magic != expected_magic:
        raise UserError(
            f"{path} has IDX magic number {magic}, expected {expected_magic} "
            f"({'labels' if expected_magic == LABELS_MAGIC else 'images'}); check the file is the right one"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(content) < header:
        raise UserError(f"{path} is truncated (incomplete IDX header); replace it with an intact copy")
    dims = struct.unpack(f">{ndim}I", content[4:header])
    count = 1
    for d in dims:
        count *= d
    if len(content) != header + count:
        raise UserError(
            f"{path} holds {len(content) - header} data bytes but its header {tuple(dims)} needs {count}; "
            "the file is truncated or corrupted, replace it with an intact copy"
        )
    data = torch.frombuffer(bytearray(content[header:]), dtype=torch.uint8) if count else torch.empty(0, dtype=torch.uint8)
    return data.reshape(dims)


def read_idx(path: Path, expected_magic: int) -> torch.Tensor:
    """Read one IDX file (gzip or plain) from disk."""
    _, content, _ = read_file_bytes(path)
    return parse_idx(content, expected_magic, path)


def _existing(d: Path, name: str) -> Path | None:
    """`name` in `d`, or its uncompressed twin (torchvision keeps both after extracting)."""
    for candidate in (d / name, d / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _candidate_dirs(spec: DatasetSpec, root: Path | None, torchvision_folder: str) -> list[Path]:
    # A root the user names is the only place read: falling back to Debian's copy would train on other
    # files than the ones dvc.lock says were used.
    if root is not None:
        return [root, root / torchvision_folder / "raw"]
    return [DEBIAN_FASHION_MNIST] if spec.name == "fashion_mnist" else []


def _load_from(spec: DatasetSpec, d: Path, verify_checksums: bool) -> RawDataset:
    arrays = {}
    for name in spec.files:
        path = _existing(d, name)
        assert path is not None
        raw, content, compressed = read_file_bytes(path)
        if verify_checksums:
            verify(spec, path, name, raw, content, compressed)
        magic = LABELS_MAGIC if "labels" in name else IMAGES_MAGIC
        arrays[name] = (path, parse_idx(content, magic, path))

    c, h, w = spec.image_shape
    out = []
    for images_name, labels_name in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        ipath, images = arrays[images_name]
        lpath, labels = arrays[labels_name]
        if tuple(images.shape[1:]) != (h, w):
            raise UserError(
                f"{ipath} holds images of {tuple(images.shape[1:])}, {spec.name} needs {(h, w)}; check the file"
            )
        if images.shape[0] != labels.shape[0]:
            raise UserError(
                f"{ipath} has {images.shape[0]} images but {lpath} has {labels.shape[0]} labels; "
                "the two files do not belong together"
            )
        if labels.numel() and int(labels.max()) >= spec.num_classes:
            raise UserError(f"{lpath} holds label {int(labels.max())} >= {spec.num_classes} classes; check the file")
        out += [images.reshape(-1, c, h, w), labels.to(torch.int64)]
    return RawDataset(out[0], out[1], out[2], out[3], spec)


def _make_loader(torchvision_folder: str, torchvision_class: str, extra_ways: tuple[str, ...]):
    def load(spec: DatasetSpec, root: Path | None, verify_checksums: bool, download: bool) -> RawDataset:
        dirs = _candidate_dirs(spec, root, torchvision_folder)
        present = lambda d: all(_existing(d, n) is not None for n in spec.files)  # noqa: E731
        found = first_complete_dir(dirs, present)
        if found is None and download:

            def fetch(target: Path) -> None:
                import torchvision.datasets

                getattr(torchvision.datasets, torchvision_class)(str(target), train=True, download=True)

            target = download_with(spec, root, fetch)
            dirs.append(target / torchvision_folder / "raw")
            found = first_complete_dir([target / torchvision_folder / "raw"], present)
        if found is None:
            if root is not None:
                lacking = [n for n in spec.files if _existing(root, n) is None]
                raise UserError(missing_in_root(spec, root, lacking, dirs[1:], download))
            raise UserError(missing_message(spec, dirs, extra_ways, download))
        return _load_from(spec, found, verify_checksums)

    return load


# Fashion-MNIST: SHA-256 of the DECOMPRESSED files, measured from Debian's dataset-fashion-mnist
# package (Debian re-compresses the .gz files, so digests of the compressed bytes differ from upstream).
FASHION_MNIST = DATASETS.register("fashion_mnist")(
    DatasetSpec(
        name="fashion_mnist",
        num_classes=10,
        image_shape=(1, 28, 28),
        mean=(0.2860,),
        std=(0.3530,),
        files=IDX_FILES,
        checksums={
            TRAIN_IMAGES: Checksum("sha256", "decompressed", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            TRAIN_LABELS: Checksum("sha256", "decompressed", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            TEST_IMAGES: Checksum("sha256", "decompressed", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            TEST_LABELS: Checksum("sha256", "decompressed", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        },
        loader=_make_loader(
            "FashionMNIST",
            "FashionMNIST",
            ("install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)",),
        ),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        train_size=60_000,
    )
)

# MNIST: MD5 of the upstream COMPRESSED .gz files (as documented by torchvision); no decompressed
# digests could be measured here. An uncompressed-only copy cannot be checked (a warning says so).
MNIST = DATASETS.register("mnist")(
    DatasetSpec(
        name="mnist",
        num_classes=10,
        image_shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        files=IDX_FILES,
        checksums={
            TRAIN_IMAGES: Checksum("md5", "file", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            TRAIN_LABELS: Checksum("md5", "file", "d53e105ee54ea40749a09fcbcd1e9432"),
            TEST_IMAGES: Checksum("md5", "file", "9fb629c4189551a2d022fa330f9573f3"),
            TEST_LABELS: Checksum("md5", "file", "ec29112dd5afa0611ce80d1b7f02629c"),
        },
        loader=_make_loader("MNIST", "MNIST", ()),
        class_names=tuple(str(i) for i in range(10)),
        train_size=60_000,
    )
)
