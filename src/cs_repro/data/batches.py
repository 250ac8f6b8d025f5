"""In-memory batching of uint8 image tensors, with batched (vectorised) CIFAR augmentation.

No per-sample Python work: an epoch is one permutation, then one gather per batch; conversion to
float and normalisation happen per batch on the data's device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F


def _draw_device(generator: torch.Generator) -> torch.device:
    return torch.device(generator.device)


def augment_batch(images: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop of the zero-padded images back to their size, plus random horizontal flip.

    `images` is [B, C, H, W] (uint8 or float, any device); the offsets (uniform in 0..2*pad) and
    flips (probability 1/2) are drawn from `generator` (offsets y, then x, then flips), on the
    generator's device, so a seeded generator gives the same result every time. Same dtype out.
    """
    if images.ndim != 4:
        raise ValueError(f"augment_batch expects [B, C, H, W], got {tuple(images.shape)}")
    b, c, h, w = images.shape
    dev = images.device
    gdev = _draw_device(generator)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=gdev).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=gdev).to(dev)
    flips = torch.rand(b, generator=generator, device=gdev).to(dev) < 0.5 if flip else None
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    hp, wp = h + 2 * pad, w + 2 * pad
    rows = oy[:, None] + torch.arange(h, device=dev)  # [B, H] source rows in the padded image
    cols = ox[:, None] + torch.arange(w, device=dev)  # [B, W] source columns
    if flips is not None:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    # One gather over the flattened padded planes: position (i, j) reads padded[rows[i], cols[j]].
    flat_idx = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(padded.reshape(b, c, hp * wp), 2, flat_idx).reshape(b, c, h, w)


class Normalisation:
    """(x/255 - mean)/std per channel, written x * scale + shift: uint8 [B, C, H, W] in, float32 out, on `device`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str) -> None:
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images_uint8.to(torch.float32), self.scale)


@dataclass(frozen=True)
class Shard:
    """This process's part of a run on several processes (docs/architecture.md, "One run on several GPUs").

    Training: every global batch, drawn exactly as for one process, is cut into `processes` equal parts and
    rank r takes part r; a last, partial global batch is dropped (unequal parts would weigh samples unequally).
    Evaluation: rank r takes whole global batches r, r + processes, ... (the loop sums the counts).
    """

    rank: int = 0
    processes: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.processes:
            raise ValueError(f"shard ({self.rank}, {self.processes}): the rank must lie in 0..processes-1")

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.processes:
            raise ValueError(f"batch_size {batch_size} does not split into {self.processes} equal parts")

    def global_batches(self, samples: int, batch_size: int, *, training: bool, drop_last: bool = False,
                       max_batches: int | None = None) -> int:
        whole = drop_last or (training and self.processes > 1)
        full = samples // batch_size if whole else -(-samples // batch_size)
        return full if max_batches is None else min(full, max_batches)

    def batch_numbers(self, global_batches: int, *, training: bool) -> range:
        """The global batches this process reads (all of them when training: it takes a part of each)."""
        return range(global_batches) if training else range(self.rank, global_batches, self.processes)

    def part(self, batch_size: int) -> slice:
        """This process's part of a training batch (the whole batch for one process)."""
        size = batch_size // self.processes
        return slice(self.rank * size, (self.rank + 1) * size)


class TensorBatches:
    """Iterable of (normalised float images, int64 labels) batches over tensors held on `device`.

    images: uint8 [N, C, H, W]; labels: [N]. With a `generator` the order is a fresh random
    permutation each epoch (training); without, samples come in order (evaluation).
    `augment=True` applies `augment_batch` with the same generator (requires one).
    `max_batches` truncates every epoch to at most that many batches.

    `shard=(rank, processes)`: this process's part of a run on several processes (see `Shard`); order and
    augmentation are drawn exactly as for one process.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        max_batches: int | None = None,
        augment: bool = False,
        device: torch.device | str | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
        if augment and generator is None:
            raise ValueError("augment=True needs a generator")
        self.shard = Shard(*shard)
        if generator is not None:
            self.shard.check_batch(batch_size)
        c = images.shape[1]
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values (one per channel), got {len(mean)}/{len(std)}")
        device = torch.device(device) if device is not None else images.device
        self.images = images.to(device)
        self.labels = labels.to(device, torch.int64)
        self.batch_size = int(batch_size)
        self.generator = generator
        self.drop_last = drop_last
        self.max_batches = max_batches
        self.augment = augment
        self.device = device
        self.normalise = Normalisation(mean, std, device)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def _batch_numbers(self) -> range:
        training = self.generator is not None
        total = self.shard.global_batches(self.num_samples, self.batch_size, training=training,
                                          drop_last=self.drop_last, max_batches=self.max_batches)
        return self.shard.batch_numbers(total, training=training)

    def __len__(self) -> int:
        return len(self._batch_numbers())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = self.num_samples, self.batch_size
        order = None
        if self.generator is not None:
            order = torch.randperm(n, generator=self.generator, device=_draw_device(self.generator)).to(self.device)
        for k in self._batch_numbers():
            lo, hi = k * bs, min(n, (k + 1) * bs)
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.images[idx], self.labels[idx]
            if self.augment:
                x = augment_batch(x, self.generator)
            if order is not None:
                part = self.shard.part(bs)
                x, y = x[part], y[part]
            yield self.normalise(x), y
