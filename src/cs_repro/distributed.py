"""One run across several processes (one per GPU): who this process is in the run, and the sums the training
loop needs. Starting the processes is `cs_repro.launch`'s job.

What stays the same across process counts and what does not: docs/architecture.md ("One run on several GPUs").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current() -> World:
    """This process's place in the run (World() when the run is one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def all_sum(tensor):
    """Sum of `tensor` over every process, in place (unchanged in a one-process run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor

