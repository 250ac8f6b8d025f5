"""Helpers that write tiny datasets in the exact on-disk formats the readers accept.

Plain functions: a test calls them with a directory under `tmp_path` and gets the root back.
Images are learnable: each class has its own mean intensity and a bright bar at a class-specific
row, plus uniform noise, so a small network separates the classes in a few steps.
"""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"


def make_images(labels: np.ndarray, shape: tuple[int, ...], num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 images [N, *shape] (shape (H, W) or (C, H, W)) whose content depends on the label."""
    n = len(labels)
    h = shape[-2]
    base = 30 + (170 * labels / max(1, num_classes - 1))  # class-specific mean intensity
    img = base.reshape(n, *([1] * len(shape))) + rng.uniform(-25, 25, size=(n, *shape))
    bar_rows = (labels * h) // max(1, num_classes)  # class-specific bright row
    img_rows = img.reshape(n, -1, h, shape[-1])
    img_rows[np.arange(n), :, bar_rows, :] = 250
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Every class present (as evenly as n allows), in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_dataset(
    root: Path | str,
    n_train: int,
    n_test: int,
    shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
    seed: int = 0,
    gz: bool = True,
) -> Path:
    """Write MNIST-style IDX files into `root` (gzip with the upstream `.gz` names, or plain without `.gz`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_labels = make_labels(n_train, num_classes, rng)
    test_labels = make_labels(n_test, num_classes, rng)
    arrays = {
        "train_images": make_images(train_labels, shape, num_classes, rng),
        "train_labels": train_labels,
        "test_images": make_images(test_labels, shape, num_classes, rng),
        "test_labels": test_labels,
    }
    for key, name in IDX_NAMES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (root / name).write_bytes(gzip.compress(data, mtime=0))
        else:
            (root / name.removesuffix(".gz")).write_bytes(data)
    return root


def read_fixture_idx(root: Path | str, key: str) -> np.ndarray:
    """Independent decoder used by tests to get the expected arrays back (gz or plain)."""
    root = Path(root)
    name = IDX_NAMES[key]
    path = root / name if (root / name).exists() else root / name.removesuffix(".gz")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def _cifar_batch(labels: np.ndarray, rng: np.random.Generator, label: str) -> dict:
    images = make_images(labels, (3, 32, 32), 10, rng)
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(labels), 3072),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }


def write_cifar10(root: Path | str, n_per_batch: int, n_test: int, seed: int = 0, as_tar: bool = False) -> Path:
    """Write `cifar-10-batches-py/` (5 train batches, test_batch, batches.meta) under `root`,
    or, with `as_tar`, only `cifar-10-python.tar.gz` holding that folder. Returns `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = {f"data_batch_{i}": _cifar_batch(make_labels(n_per_batch, 10, rng), rng, f"training batch {i} of 5") for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(make_labels(n_test, 10, rng), rng, "testing batch 1 of 1")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batches["batches.meta"] = {b"num_cases_per_batch": n_per_batch, b"label_names": [s.encode() for s in names], b"num_vis": 3072}
    if as_tar:
        with tarfile.open(root / CIFAR_ARCHIVE, "w:gz") as tar:
            folder = tarfile.TarInfo(CIFAR_FOLDER)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
            for name, obj in batches.items():
                data = pickle.dumps(obj, protocol=2)
                info = tarfile.TarInfo(f"{CIFAR_FOLDER}/{name}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    else:
        folder = root / CIFAR_FOLDER
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        for name, obj in batches.items():
            (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    return root


def read_fixture_cifar(root: Path | str, name: str) -> tuple[np.ndarray, list[int]]:
    """Independent decoder used by tests: ([N, 3, 32, 32] uint8, labels) of one written batch file."""
    with open(Path(root) / CIFAR_FOLDER / name, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return d[b"data"].reshape(-1, 3, 32, 32), list(d[b"labels"])


def write_image_folder(root: Path | str, classes: int = 4, train_per_class: int = 12, val_per_class: int = 4,
                       seed: int = 0) -> Path:
    """An ImageNet-style tree, root/{train,val}/<wnid>/*.JPEG, of real JPEGs (sizes 40-72 pixels, not square,
    one .png-content file named .JPEG as in ImageNet's train set); each class has its own colour and bar."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{1440764 + c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = int(rng.integers(40, 73)), int(rng.integers(40, 73))
                colour = np.array([60 * c % 256, 255 - 50 * c % 256, 40 + 30 * c], dtype=np.float64)
                pixels = colour + rng.uniform(-30, 30, size=(h, w, 3))
                pixels[(c * h) // classes, :, :] = 250
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                name = f"n{1440764 + c:08d}_{i}.JPEG"
                image.save(folder / name, format="PNG" if (split, c, i) == ("train", 0, 0) else "JPEG", quality=90)
    return root
