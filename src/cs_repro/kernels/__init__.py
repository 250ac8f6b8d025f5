"""Fused CPU kernels, built on first use with torch's own extension builder.

The CS soft mask on a CPU is bound by passes over weight-sized tensors (on a small network such as
LeNet-300-100 those passes cost as much as the matmuls). `soft_mask.cpp` does the mask's forward and
backward in one pass each, with the penalty's gradient folded in, and registers the autograd formula
in C++ as the op ``torch.ops.cs_repro.soft_masked_weight``. `cs_repro.masks` uses it for float32
tensors on the CPU and falls back to ATen ops elsewhere or when the kernel cannot be built.

Building takes ~12 s once per machine (it needs a C++ compiler and ninja). The library is cached
under ``$CS_REPRO_KERNEL_CACHE`` (default ``$XDG_CACHE_HOME/cs_repro/kernels``, i.e.
``~/.cache/cs_repro/kernels``) in a folder keyed by the source, the flags, torch's version and the
CPU: it is compiled for the CPU it runs on (``-march=native``), and a shared home directory may
serve several kinds of machine.

``CS_REPRO_MASK_KERNEL=aten`` turns the kernel off (``fused``: require it, fail if it cannot be
built; ``auto``, the default: use it where it builds).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
from pathlib import Path

import torch

from cs_repro.errors import UserError

log = logging.getLogger("cs_repro")

KERNEL_ENV = "CS_REPRO_MASK_KERNEL"  # auto | fused | aten
CACHE_ENV = "CS_REPRO_KERNEL_CACHE"
SOURCE = Path(__file__).with_name("soft_mask.cpp")
LIBRARY_NAME = "cs_repro_soft_mask"
# No -ffast-math and no FMA contraction: vector and scalar code must give the same bits (see the .cpp).
# -fno-trapping-math only stops the compiler from caring about FP exception flags; without it gcc 12 cannot
# turn exp_approx's clamps into vector selects on AVX2-only CPUs (AVX-512 has masked ops) and left the
# loops scalar: 6.8x slower forward, 4.3x forward + backward, on the 2-core AMD EPYC; same bits either way.
# -fopenmp: at::parallel_for is OpenMP in torch's builds; it shares torch's OpenMP runtime and threads.
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
if platform.machine() in ("x86_64", "AMD64"):
    CFLAGS.append("-mprefer-vector-width=512")  # gcc defaults to 256-bit vectors even where AVX-512 exists

_lock = threading.Lock()
_state: dict[str, object] = {}  # "loaded": bool, "error": str


def kernel_mode() -> str:
    mode = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if mode not in {"auto", "fused", "aten"}:
        raise UserError(f"{KERNEL_ENV}={mode!r} is not a mask kernel; use auto, fused or aten")
    return mode


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def build_directory() -> Path:
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), " ".join(CFLAGS).encode(),
                 _cpu_identity().encode(), platform.machine().encode()):
        key.update(part)
        key.update(b"\0")
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cs_repro" / "kernels"
    return Path(root) / key.hexdigest()[:16]


def _load() -> None:
    directory = build_directory()
    library = directory / f"{LIBRARY_NAME}.so"
    finished = directory / "built.ok"  # written after a complete build: another process may be mid-link
    if finished.exists() and library.exists():
        torch.ops.load_library(str(library))
        return
    from torch.utils import cpp_extension  # imported only when building: it is slow to import

    directory.mkdir(parents=True, exist_ok=True)
    log.info("building the fused soft-mask kernel in %s (once per machine, ~10 s)", directory)
    cpp_extension.load(
        name=LIBRARY_NAME,
        sources=[str(SOURCE)],
        extra_cflags=CFLAGS,
        build_directory=str(directory),
        is_python_module=False,
        verbose=False,
    )
    finished.write_text(f"torch {torch.__version__}\n")


def fused_soft_mask_available() -> bool:
    """True when `torch.ops.cs_repro.soft_masked_weight` can be used (built and loaded on first call)."""
    mode = kernel_mode()
    if mode == "aten":
        return False
    with _lock:
        if "loaded" not in _state:
            try:
                _load()
                _state["loaded"] = True
            except Exception as error:  # no compiler, no ninja, a failed build: fall back, say so once
                _state["loaded"] = False
                _state["error"] = _one_line(error)
                if mode == "auto":
                    log.warning("fused soft-mask kernel unavailable (%s); using ATen ops (slower on CPU)",
                                _state["error"])
    if mode == "fused" and not _state["loaded"]:
        raise UserError(f"{KERNEL_ENV}=fused but the kernel could not be built: {_state['error']}")
    return bool(_state["loaded"])


def _one_line(error: Exception) -> str:
    """A build error's last line (compiler output is long; the last line names the failure)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1].strip() if lines else 'no message'}"
