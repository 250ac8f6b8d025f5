"""ImageNet (ILSVRC-2012) in the usual ImageFolder layout, indexed rather than loaded: 1.28 million images do not
fit one in-memory tensor, so `prepare` checks the tree and writes the file list; training streams the images
(`data/streaming.py`).

Layout under data.root: `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG`, the same class folders in both (the
official validation archive is flat: sort it into class folders first, docs/data.md says how). The official
validation set is our test set; the validation set is held out of train (class-balanced, from the run's seed,
as for CIFAR-10).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from cs_repro.data.registry import DATASETS, IMAGENET_MEAN, IMAGENET_STD, DatasetSpec
from cs_repro.errors import UserError

log = logging.getLogger("cs_repro")

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
INDEX_FORMAT = "cs-repro-image-index/1"
#: A JPEG's end-of-image marker; a file cut short lacks it (entropy-coded data never holds FF D9: FF is stuffed).
_JPEG_END = b"\xff\xd9"
_TAIL = 4096


def _signature_problem(path: Path) -> str | None:
    """What is wrong with an image file's bytes at first sight (a cheap check of every file: its first bytes and,
    for a JPEG, the end marker near its end), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(8)
            if head[:3] == b"\xff\xd8\xff":
                stream.seek(max(0, size - _TAIL))
                return None if _JPEG_END in stream.read() else "is truncated (no JPEG end marker in its last 4 KiB)"
            if head == b"\x89PNG\r\n\x1a\n":  # ImageNet's train set holds a PNG named .JPEG
                return None
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    return "is empty" if size == 0 else "is not a JPEG or PNG image"


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))


def _images(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder)
                  if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES))


def build_index(spec: DatasetSpec, root: Path | None) -> dict[str, Any]:
    """Check the tree under `root` and list its images: every failure is one line naming the folder or file."""
    if root is None:
        raise UserError(f"{spec.name}: data.root is empty; set it to the folder holding train/ and val/ (ImageNet "
                        f"cannot be downloaded automatically; docs/data.md says how to lay out the official archives)")
    if not root.is_dir():
        raise UserError(f"{spec.name}: data.root {root} does not exist (or is not a folder); point it at the folder "
                        f"holding train/ and val/")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(f"{spec.name}: {root} has no {split}/ folder; the layout is train/<wnid>/*.JPEG and "
                            f"val/<wnid>/*.JPEG (docs/data.md)")
    classes = _class_folders(root / "train")
    if not classes:
        raise UserError(f"{spec.name}: {root / 'train'} holds no class folders (train/<wnid>/*.JPEG)")
    if len(classes) > spec.num_classes:
        raise UserError(f"{spec.name}: {root / 'train'} holds {len(classes)} class folders; at most "
                        f"{spec.num_classes} are allowed")
    val_classes = _class_folders(root / "val")
    if val_classes != classes:
        extra = sorted(set(val_classes) - set(classes))
        lacking = sorted(set(classes) - set(val_classes))
        what = f"has {extra[0]}, which train/ lacks" if extra else f"lacks {lacking[0]}, which train/ has"
        raise UserError(f"{spec.name}: {root / 'val'} {what} (val/ must hold the same class folders as train/; a "
                        f"flat val/ must be sorted into class folders first: docs/data.md)")
    index: dict[str, Any] = {"format": INDEX_FORMAT, "dataset": spec.name, "root": str(root.resolve()),
                             "classes": classes}
    for split, key in (("train", "train"), ("val", "test")):
        files: list[str] = []
        labels: list[int] = []
        for label, wnid in enumerate(classes):
            names = _images(root / split / wnid)
            if not names:
                raise UserError(f"{spec.name}: {root / split / wnid} holds no images (*.JPEG, *.jpg or *.png)")
            for name in names:
                relative = f"{split}/{wnid}/{name}"
                problem = _signature_problem(root / relative)
                if problem:
                    raise UserError(f"{spec.name}: {root / relative} {problem}; replace or remove it and run "
                                    f"prepare again")
                files.append(relative)
                labels.append(label)
        index[f"{key}_files"] = files
        index[f"{key}_labels"] = torch.tensor(labels, dtype=torch.int64)
    if len(classes) != spec.num_classes:
        log.warning("%s: %s holds %d classes, not ImageNet's %d (a subset: the network keeps %d outputs)", spec.name,
                    root, len(classes), spec.num_classes, spec.num_classes)
    return index


def _no_in_memory_copy(spec: DatasetSpec, *args) -> None:
    raise UserError(f"{spec.name} is streamed from disk, not loaded into memory: use its prepared index "
                    f"(data/prepared/{spec.name}.pt, `dvc repro prepare@{spec.name}`)")


IMAGENET = DATASETS.register("imagenet")(
    DatasetSpec(
        name="imagenet",
        num_classes=1000,
        image_shape=(3, 224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        files=("train/", "val/"),
        checksums={},
        loader=_no_in_memory_copy,
        train_size=1_281_167,
        index=build_index,
    )
)
