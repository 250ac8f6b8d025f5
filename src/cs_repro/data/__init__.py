"""Datasets: registry of specs, on-disk readers, splits, and in-memory batching."""

from cs_repro.data.registry import DATASETS, Checksum, DatasetSpec, RawDataset, load_dataset
from cs_repro.data import idx as _idx  # noqa: F401  (registers mnist, fashion_mnist)
from cs_repro.data import cifar as _cifar  # noqa: F401  (registers cifar10)
from cs_repro.data import imagenet as _imagenet  # noqa: F401  (registers imagenet, streamed from disk)
from cs_repro.data.split import class_balanced_split, subset
from cs_repro.data.batches import TensorBatches, augment_batch

__all__ = [
    "DATASETS",
    "Checksum",
    "DatasetSpec",
    "RawDataset",
    "load_dataset",
    "class_balanced_split",
    "subset",
    "TensorBatches",
    "augment_batch",
]
