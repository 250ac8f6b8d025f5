"""Device choice and the GPU fast paths. None of this changes CPU results."""

from __future__ import annotations

import logging
import os
import platform

import torch

from cs_repro.errors import UserError

log = logging.getLogger("cs_repro")

DEVICE_ENV = "CS_REPRO_DEVICE"  # auto | cpu | cuda | cuda:N  (never put an index in a DVC stage command)
DETERMINISTIC_ENV = "CS_REPRO_DETERMINISTIC"  # 1: deterministic kernels on CUDA (slower)


def choose_device(requested: str | None = None) -> torch.device:
    """`requested` (or $CS_REPRO_DEVICE, else 'auto'): auto picks CUDA when there is one."""
    requested = (requested or os.environ.get(DEVICE_ENV) or "auto").strip()
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise UserError(f"device {requested!r} is not a device; use auto, cpu or cuda") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {requested!r} asked for, but no CUDA GPU is visible; use --device cpu")
    if device.type == "cuda":
        deterministic = os.environ.get(DETERMINISTIC_ENV, "0") == "1"
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
    return device


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{cpu}, {threads} thread{'' if threads == 1 else 's'}"
