"""The prepare stage's product: a dataset's raw files read (checksums verified) into one uint8 tensor file
under data/prepared/, which every training run loads instead of the raw files; for a dataset streamed from
disk (ImageNet), its checked index of image files and labels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cs_repro.data import DATASETS, load_dataset
from cs_repro.errors import UserError
from cs_repro.io import atomic_torch_save, safe_torch_load

if TYPE_CHECKING:
    from cs_repro.params import Params

PREPARED_DIR = Path("data/prepared")


def prepared_path(dataset: str, root: Path = PREPARED_DIR) -> Path:
    return Path(root) / f"{dataset}.pt"


def prepare_dataset(params: Params, dataset: str, out: Path) -> dict[str, Any]:
    """Read the raw files (checksums verified) into one uint8 tensor file; a streamed dataset's index instead."""
    spec = DATASETS.get(dataset)
    if spec.streamed:
        root = params.data.root or None
        index = spec.index(spec, None if root is None else Path(root).expanduser())
        atomic_torch_save(index, out)
        return {"dataset": dataset, "train": len(index["train_labels"]), "test": len(index["test_labels"])}
    raw = load_dataset(dataset, params.data.root or None, params.data.verify_checksums, params.data.download)
    atomic_torch_save(
        {
            "dataset": dataset,
            "train_images": raw.train_images.contiguous(),
            "train_labels": raw.train_labels.contiguous(),
            "test_images": raw.test_images.contiguous(),
            "test_labels": raw.test_labels.contiguous(),
        },
        out,
    )
    return {"dataset": dataset, "train": len(raw.train_labels), "test": len(raw.test_labels)}


def load_prepared(dataset: str, root: Path = PREPARED_DIR) -> dict[str, torch.Tensor]:
    path = prepared_path(dataset, root)
    if not path.exists():
        raise UserError(f"{path} is missing: run `dvc repro prepare@{dataset}` (or `python stages/prepare.py {dataset}`) first")
    return safe_torch_load(path, "prepared dataset")
