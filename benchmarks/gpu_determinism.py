"""Deterministic mode on a GPU: two identical CS searches of ResNet-20 with CS_REPRO_DETERMINISTIC=1 must
write byte-identical metrics and masks. CIFAR-format files are written first (random content).

CS_REPRO_DETERMINISTIC=1 PYTHONPATH=src:tests python benchmarks/gpu_determinism.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    from fixtures import write_cifar10

    from cs_repro.data.prepared import prepare_dataset, prepared_path
    from cs_repro.methods.cs import run_cs_search
    from cs_repro.device import choose_device
    from cs_repro.params import params_from_dict
    from cs_repro.profiles import load_profile
    from cs_repro.tickets import load_ticket

    device = choose_device()
    work = Path(tempfile.mkdtemp())
    root = write_cifar10(work / "cifar", n_per_batch=2000, n_test=1000)
    raw = load_profile("paper", REPO / "conf")
    raw["data"].update(root=str(root), download=False, verify_checksums=False)
    raw["networks"]["resnet20"].update(epochs=2, lr_milestones=[1], rewind_epoch=1, max_batches=20, val_size=500)
    os.chdir(work)
    params = params_from_dict(raw)
    prepare_dataset(params, "cifar10", prepared_path("cifar10"))
    for name in ("a", "b"):
        run_cs_search(params, "resnet20", 0.0, 0, work / name, device, checkpoint_dir=None)
    same_metrics = (work / "a" / "metrics.json").read_bytes() == (work / "b" / "metrics.json").read_bytes()
    a, b = load_ticket(work / "a" / "ticket.pt"), load_ticket(work / "b" / "ticket.pt")
    same_masks = all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)
    print(f"deterministic={os.environ.get('CS_REPRO_DETERMINISTIC', '0')} device={device}: "
          f"identical metrics {same_metrics}, identical masks {same_masks}")


if __name__ == "__main__":
    main()
