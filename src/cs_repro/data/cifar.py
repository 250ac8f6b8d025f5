"""Reader for the CIFAR-10 "python version" (pickled batches) and its dataset spec.

Layout: `cifar-10-batches-py/` holding data_batch_1..5, test_batch and batches.meta; each batch
is a pickled dict with b"data" (uint8 [N, 3072], channel-major 3x32x32) and b"labels" (ints).
The `cifar-10-python.tar.gz` archive in the root is extracted there when the folder is missing.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
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

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CIFAR_FILES = (*TRAIN_BATCHES, TEST_BATCH, META)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain (builtins and numpy arrays), so a hostile file cannot run code."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how python 3 writes bytes objects in protocol-2 pickles
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")


def read_batch_bytes(content: bytes, path: Path | str = "<bytes>") -> dict:
    """Unpickle one CIFAR batch / meta file (keys stay bytes, as in the original python-2 pickles)."""
    import io

    try:
        obj = _BatchUnpickler(io.BytesIO(content), encoding="bytes").load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... on a damaged file
        raise UserError(
            f"{path} is not a readable CIFAR-10 python batch ({type(e).__name__}: {e}); replace it with an intact copy"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not hold a CIFAR-10 batch dict; replace it with an intact copy")
    return obj


def batch_to_tensors(batch: dict, path: Path | str = "<bytes>") -> tuple[torch.Tensor, torch.Tensor]:
    """b"data" [N, 3072] uint8 and b"labels" -> (uint8 [N, 3, 32, 32], int64 [N])."""
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise UserError(f"{path} lacks b'data' or b'labels'; replace it with an intact CIFAR-10 batch")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != data.shape[0]:
        raise UserError(
            f"{path} holds data {data.dtype} {tuple(data.shape)} with {len(labels)} labels, "
            "expected uint8 [N, 3072] with N labels; replace it with an intact CIFAR-10 batch"
        )
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
    return images, torch.as_tensor(np.asarray(labels, dtype=np.int64))


def _present(d: Path) -> bool:
    return all((d / n).is_file() for n in CIFAR_FILES)


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract the CIFAR-10 tarball into `dest` (refusing members that would escape it)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{archive} could not be extracted ({e}); replace it with an intact copy") from None


def _load(spec: DatasetSpec, root: Path | None, verify_checksums: bool, download: bool) -> RawDataset:
    dirs: list[Path] = []
    if root is not None:
        dirs = [root / FOLDER, root]
        if not _present(root / FOLDER) and not _present(root) and (root / ARCHIVE).is_file():
            extract_archive(root / ARCHIVE, root)
    found = first_complete_dir(dirs, _present)
    if found is None and download:

        def fetch(target: Path) -> None:
            import torchvision.datasets

            torchvision.datasets.CIFAR10(str(target), train=True, download=True)

        target = download_with(spec, root, fetch)
        dirs.append(target / FOLDER)
        found = first_complete_dir([target / FOLDER], _present)
    if found is None:
        if root is not None and not root.is_dir():
            raise UserError(missing_in_root(spec, root, CIFAR_FILES, (), download))
        raise UserError(
            missing_message(spec, dirs, (f"put {ARCHIVE} in the data.root folder",), download)
        )

    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in CIFAR_FILES:
        path = found / name
        try:
            content = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {path} ({e.strerror}); check the file's permissions") from None
        if verify_checksums:
            verify(spec, path, name, content, content, False)
        batch = read_batch_bytes(content, path)
        if name != META:
            parts[name] = batch_to_tensors(batch, path)
    train_images = torch.cat([parts[n][0] for n in TRAIN_BATCHES])
    train_labels = torch.cat([parts[n][1] for n in TRAIN_BATCHES])
    test_images, test_labels = parts[TEST_BATCH]
    for labels, where in ((train_labels, "data_batch_*"), (test_labels, TEST_BATCH)):
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= spec.num_classes):
            raise UserError(f"{found / where} holds labels outside 0..{spec.num_classes - 1}; check the files")
    return RawDataset(train_images, train_labels, test_images, test_labels, spec)


# CIFAR-10: MD5 of each (uncompressed) batch file as extracted from the upstream archive, as
# documented by torchvision; no SHA-256 could be measured here.
CIFAR10 = DATASETS.register("cifar10")(
    DatasetSpec(
        name="cifar10",
        num_classes=10,
        image_shape=(3, 32, 32),
        # The released CS code's normalisation (docs/method.md): mean (125.3, 123.0, 113.9)/255, std (63.0, 62.1, 66.7)/255.
        mean=(125.3 / 255, 123.0 / 255, 113.9 / 255),
        std=(63.0 / 255, 62.1 / 255, 66.7 / 255),
        files=CIFAR_FILES,
        checksums={
            "data_batch_1": Checksum("md5", "file", "c99cafc152244af753f735de768cd75f"),
            "data_batch_2": Checksum("md5", "file", "d4bba439e000b95fd0a9bffe97cbabec"),
            "data_batch_3": Checksum("md5", "file", "54ebc095f3ab1f0389bbae665268c751"),
            "data_batch_4": Checksum("md5", "file", "634d18415352ddfa80567beed471001a"),
            "data_batch_5": Checksum("md5", "file", "482c414d41f54cd18b22e5b47cb7c3cb"),
            "test_batch": Checksum("md5", "file", "40351d587109b95175f43aff81a1287e"),
            "batches.meta": Checksum("md5", "file", "5ff9c542aee3614f3951f8cda6e48888"),
        },
        loader=_load,
        class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        train_size=50_000,
    )
)
