"""Batches of images read from disk as training goes (ImageNet): torch's DataLoader with worker processes,
pinned memory and persistent workers, torchvision's transforms.

Reproducible whatever the number of workers or processes: an epoch's order and one seed per sample are drawn
from the loop's generator (the same draws on every process), and a sample's random crop and flip come from
its own seed. Workers hand over uint8 images; conversion and normalisation happen on the device, per batch.
A file that cannot be decoded ends the run with one line naming it (workers report it instead of raising).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from cs_repro.data.batches import Normalisation, Shard
from cs_repro.errors import UserError

#: Evaluation resizes the shorter side to crop * 256 / 224 (256 for 224) before the centre crop.
RESIZE_RATIO = 256 / 224
#: Batches each worker prepares ahead (torch's default). Every one sits in shared memory: for the imagenet
#: profile 8 workers x 2 x 128 crops of 224 x 224 x 3 bytes = 308 MB per process (cs-repro preflight checks it).
PREFETCH = 2


def transforms_for(train: bool, crop: int):
    """torchvision's standard ImageNet transforms: RandomResizedCrop + horizontal flip for training, resize +
    centre crop for evaluation; PIL image in, uint8 tensor [3, crop, crop] out."""
    from torchvision.transforms import v2

    if train:
        steps = [v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.Resize(round(crop * RESIZE_RATIO), antialias=True), v2.CenterCrop(crop)]
    return v2.Compose([v2.PILToTensor(), *steps])


class ImageFiles(Dataset):
    """Items are (index, seed) pairs: the image at `files[index]` under `root`, transformed with `seed`; or an
    error line when it cannot be read."""

    def __init__(self, root: Path, files: Sequence[str], labels: torch.Tensor, train: bool, crop: int) -> None:
        self.root = Path(root)
        self.files = list(files)
        self.labels = labels
        self.transform = transforms_for(train, crop)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]):
        from PIL import Image

        index, seed = item
        path = self.root / self.files[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for truncated or foreign files
            return f"cannot decode {path} ({type(error).__name__}: {str(error).splitlines()[0][:160]}); replace or " \
                   f"remove it and run prepare again"
        with torch.random.fork_rng(devices=[]):  # the sample's own draws; the process's generator is untouched
            torch.manual_seed(seed)
            return self.transform(rgb), int(self.labels[index])


def _collate(samples):
    problem = next((sample for sample in samples if isinstance(sample, str)), None)
    if problem is not None:
        return problem
    images, labels = zip(*samples)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


class _Plan:
    """The batch sampler: lists of (index, seed) for this process, set afresh before every epoch."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamedBatches:
    """Iterable of (normalised float images, int64 labels) over image files, the streamed counterpart of
    `TensorBatches` (the same `Shard`). `batches(generator)`: a generator means a training epoch."""

    def __init__(self, root: Path, files: Sequence[str], labels: torch.Tensor, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], *, train: bool, crop: int, workers: int,
                 device: torch.device, max_batches: int | None = None, shard: tuple[int, int] = (0, 1),
                 augment: bool | None = None) -> None:
        """`train`: shuffled epochs from the loop's generator; `augment` (default: `train`): random crops and flips
        rather than the evaluation's resize and centre crop."""
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.dataset = ImageFiles(root, files, labels, train if augment is None else augment, crop)
        self.batch_size = int(batch_size)
        self.train = train
        self.max_batches = max_batches
        self.device = torch.device(device)
        self.shard = Shard(*shard)
        if train:
            self.shard.check_batch(batch_size)
        self._plan = _Plan()
        self.loader = DataLoader(
            self.dataset, batch_sampler=self._plan, num_workers=workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=PREFETCH if workers > 0 else None,
        )
        self.normalise = Normalisation(mean, std, self.device)

    def _batch_numbers(self) -> range:
        total = self.shard.global_batches(len(self.dataset), self.batch_size, training=self.train,
                                          max_batches=self.max_batches)
        return self.shard.batch_numbers(total, training=self.train)

    def __len__(self) -> int:
        return len(self._batch_numbers())

    def _plan_epoch(self, generator: torch.Generator | None) -> list[list[tuple[int, int]]]:
        n, bs = len(self.dataset), self.batch_size
        if generator is None:  # evaluation: in order, whole global batches
            return [[(i, 0) for i in range(k * bs, min(n, (k + 1) * bs))] for k in self._batch_numbers()]
        order = torch.randperm(n, generator=generator, device=generator.device).cpu().tolist()
        seeds = torch.randint(0, 2**62, (n,), generator=generator, device=generator.device).cpu().tolist()
        part = self.shard.part(bs)
        return [[(order[i], seeds[i]) for i in range(k * bs + part.start, min(n, k * bs + part.stop))]
                for k in self._batch_numbers()]

    def batches(self, generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if (generator is not None) != self.train:
            raise ValueError("a training source needs the epoch's generator; an evaluation source takes none")
        self._plan.batches = self._plan_epoch(generator)
        for batch in self.loader:
            if isinstance(batch, str):
                raise UserError(batch)
            images, labels = batch
            images = images.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            yield self.normalise(images), labels.to(self.device, non_blocking=True)
