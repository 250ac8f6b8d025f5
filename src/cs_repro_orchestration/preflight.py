"""What would stop a run after it started, checked before any DVC work: a GPU profile with no GPU visible,
a dataset that is neither prepared, nor on disk, nor downloadable from here, and too little shared memory for
runs on several processes or streamed from disk (Docker's default /dev/shm).

`cs-repro preflight` prints one line per problem it finds and exits non-zero; the image's entry point runs it
with `--container` before the pipeline, so that the advice names what a `docker run` user changes
(`--gpus all`, `-v … -e DATA_ROOT=…`) instead of params they never see.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from cs_repro.data.prepared import prepared_path
from cs_repro.data.registry import DATASETS
from cs_repro.errors import UserError

#: Profiles sized for GPUs, and what they train.
GPU_PROFILES = {
    "paper": "trains ResNet-20 and VGG-16 on CIFAR-10 for days on a GPU (weeks on a CPU)",
    "frankle": "trains ResNet-20 and VGG-16 on CIFAR-10 for days on a GPU (weeks on a CPU)",
    "imagenet": "trains ResNet-50 on ImageNet on several GPUs per run (years on a CPU)",
}

#: The host torchvision downloads each dataset from (only connected to, to see whether it can be reached).
DOWNLOAD_HOSTS = {
    "cifar10": "www.cs.toronto.edu",
    "mnist": "ossci-datasets.s3.amazonaws.com",
    "fashion_mnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
}

#: What a user mounts for each dataset, in words (a dataset not listed: its files).
DATA_FOLDERS = {"cifar10": "cifar-10-batches-py/ or cifar-10-python.tar.gz"}


def gpu_problem(profile: str, container: bool) -> str | None:
    """One line when `profile` needs a GPU and none is visible, unless CS_REPRO_DEVICE asks for the CPU."""
    if profile not in GPU_PROFILES or os.environ.get("CS_REPRO_DEVICE", "auto").strip().startswith("cpu"):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    how = ("add --gpus all to `docker run` (it needs the NVIDIA Container Toolkit), or -e CS_REPRO_DEVICE=cpu to "
           "run it on the CPU anyway" if container else
           "run it where an NVIDIA GPU is visible, or set CS_REPRO_DEVICE=cpu to run it on the CPU anyway")
    return f"the {profile} profile {GPU_PROFILES[profile]}, and no GPU is visible: {how}"


def reachable(host: str | None, timeout: float = 5.0) -> bool:
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def data_problem(params, container: bool, data_root_env: str = "") -> str | None:
    """One line for the first dataset of `sweep.datasets` that the `prepare` stage could not get."""
    for name in params.sweep.datasets:
        if prepared_path(name).exists():
            continue
        spec = DATASETS.get(name)
        root = Path(params.data.root).expanduser() if params.data.root else None
        if spec.streamed:  # listing 1.28 million files is prepare's job: here, only whether the tree is there
            if root is not None and all((root / split).is_dir() for split in ("train", "val")):
                continue
            if not container:
                looked = f"data.root {root} does not hold train/ and val/" if root else "data.root is empty"
                return (f"{name}: {looked}; set data.root to the folder holding train/<wnid>/*.JPEG and "
                        f"val/<wnid>/*.JPEG (docs/data.md says how to lay out the official archives)")
            where = f"DATA_ROOT={data_root_env} does not hold train/ and val/" if data_root_env else "no DATA_ROOT is given"
            return (f"{name} is not in the image and {where} (it cannot be downloaded): mount the folder holding "
                    f"train/ and val/ and name it, e.g. -v /path/to/{name}:/data/{name}:ro -e DATA_ROOT=/data/{name}")
        try:
            spec.load(root, verify_checksums=False, download=False)
            continue
        except UserError as error:
            missing = str(error)
        host = DOWNLOAD_HOSTS.get(name)
        if params.data.download and reachable(host):
            continue
        folder = DATA_FOLDERS.get(name, ", ".join(spec.files))
        unreachable = f"its download site ({host}) cannot be reached from here" if params.data.download else \
            "data.download is off"
        if not container:
            if not params.data.download:
                return missing  # says where it looked and what to set
            looked = f"data.root {root} does not hold it" if root else "data.root is empty"
            return f"{name}: no copy found ({looked}) and {unreachable}; set data.root to a folder holding {folder}"
        where = f"DATA_ROOT={data_root_env} does not hold it" if data_root_env else "no DATA_ROOT is given"
        return (f"{name} is not in the image, {where}, and {unreachable}: mount the folder holding {folder} and "
                f"name it, e.g. -v /path/to/{name}:/data/{name} -e DATA_ROOT=/data/{name}")
    return None


#: Shared memory a run on several processes or streamed from disk needs besides its workers' batches (NCCL's
#: buffers between the processes of a node, the launcher), per process.
SHARED_MEMORY_PER_PROCESS = 128 << 20


def shared_memory_needed(params, network: str) -> int:
    """Bytes of /dev/shm one run of `network` fills (0: none): the batches its DataLoader workers hold ready
    (workers x prefetch x the global batch of uint8 crops, over all processes) and the processes' own share,
    with half again as margin."""
    from cs_repro.data.streaming import PREFETCH

    net = params.network(network)
    spec = DATASETS.get(net.dataset)
    if net.processes == 1 and not spec.streamed:
        return 0
    side = net.image_size or spec.image_shape[1]
    batches = max(1, params.data.workers) * PREFETCH * net.batch_size * spec.image_shape[0] * side * side
    return int(1.5 * (batches * spec.streamed + SHARED_MEMORY_PER_PROCESS * net.processes))


def shared_memory_problem(params, container: bool, shm: str = "/dev/shm") -> str | None:
    """One line when /dev/shm is smaller than a run needs (`shared_memory_needed`): it would fail hours in, with a
    bus error in a DataLoader worker or NCCL (Docker's default /dev/shm is 64 MB)."""
    needs = {name: shared_memory_needed(params, name) for name in params.sweep.networks}
    name, need = max(needs.items(), key=lambda item: item[1])
    if not need:
        return None
    try:
        stat = os.statvfs(shm)
    except OSError:
        return None  # no /dev/shm (not Linux): nothing to measure
    size = stat.f_frsize * stat.f_blocks
    if size >= need:
        return None
    how = ("add --ipc=host (or --shm-size=16g) to `docker run`" if container else
           f"enlarge {shm} (or lower data.workers)")
    return (f"{shm} holds {size / 2**20:,.0f} MB; a {name} run needs about {need / 2**20:,.0f} MB there for its "
            f"DataLoader workers and processes: {how}")


def first_problem(params, container: bool = False) -> str | None:
    """The first thing that would stop the run (the GPU, then the data, then shared memory), in one line; None when
    there is none."""
    return (gpu_problem(params.profile, container) or data_problem(params, container, os.environ.get("DATA_ROOT", ""))
            or shared_memory_problem(params, container))
