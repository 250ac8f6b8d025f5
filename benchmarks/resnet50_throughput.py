"""ResNet-50 training throughput, dense vs CS side by side, and the ImageNet input pipeline's images/s.

1. Model: images/s of training steps (forward, backward, SGD) of ResNet-50 on random tensors, dense and with
   CS's soft masks on its prunable weights (the cost a CS search adds), measured alternately in one process so
   the ratio is not skewed by a machine that speeds up or slows down. On CUDA in fp32 and with bf16 autocast,
   channels_last (the loop's layout on GPUs).
2. Input: images/s of the real streamed loader (`data/streaming.py`: JPEG decode, RandomResizedCrop 224, flip,
   DataLoader workers) on generated JPEGs of ImageNet's typical size (500x375), for each worker count given:
   how many CPU cores per GPU the imagenet profile needs to keep a GPU fed.

    PYTHONPATH=src:tests python benchmarks/resnet50_throughput.py --out /tmp/resnet50.json
    (CPU, small: --image-size 64 --batch 16 --steps 3)

The imagenet profile is 1,080 ResNet-50 epochs of 1,271,167 images (docs/method.md); its GPU-hours follow from
the model rate on the GPU, if the input rate per GPU is higher.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

EPOCHS = 1080  # dense 90 + CS 4 x 90 + GMP 3 x 90 + L0 3 x 90 + magnitude fine-tuning 3 x 30
IMAGES_PER_EPOCH = 1_271_167  # 1,281,167 training images less the 10,000 held out for validation


def model_rates(device: torch.device, batch: int, size: int, steps: int, bf16: bool, rounds: int) -> dict[str, float]:
    from cs_repro.masks import SoftMasks
    from cs_repro.models import build_model, prunable_names
    from cs_repro.train import OptimConfig, make_sgd

    def setup(cs: bool):
        torch.manual_seed(0)
        model = build_model("resnet50", 1000, 3, size).to(device)
        if cs:
            SoftMasks.attach(model, prunable_names("resnet50", model), s0=0.0).set_temperature(10.0)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_sgd([p for p in model.parameters() if p.requires_grad], 0.1, OptimConfig())
        return model, optimizer

    x = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    runs = {name: setup(name == "cs") for name in ("dense", "cs")}
    seconds = {name: [] for name in runs}

    def step(model, optimizer):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for name, (model, optimizer) in runs.items():  # warm-up (cuDNN's algorithm search, the CPU kernel build)
        model.train()
        step(model, optimizer)
    for _ in range(rounds):  # alternate: a machine whose speed drifts shifts both
        for name, (model, optimizer) in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(steps):
                step(model, optimizer)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - started)
    return {name: batch * steps / min(values) for name, values in seconds.items()}


def input_rates(workers_list: list[int], batches: int, batch: int) -> dict[int, float]:
    from PIL import Image

    from cs_repro.data.registry import IMAGENET_MEAN, IMAGENET_STD
    from cs_repro.data.streaming import StreamedBatches

    folder = Path(tempfile.mkdtemp(prefix="cs-repro-jpegs-"))
    generator = torch.Generator().manual_seed(0)
    files = []
    for i in range(64):  # 64 distinct files, read repeatedly (the page cache holds them, as for a hot dataset)
        pixels = (torch.rand(375, 500, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=90)
        files.append(f"{i}.JPEG")
    count = batches * batch
    names = [files[i % len(files)] for i in range(count)]
    labels = torch.zeros(count, dtype=torch.int64)
    rates = {}
    for workers in workers_list:
        source = StreamedBatches(folder, names, labels, batch, IMAGENET_MEAN, IMAGENET_STD, train=True, crop=224,
                                 workers=workers, device=torch.device("cpu"))
        epoch = torch.Generator().manual_seed(1)
        list(source.batches(epoch))  # warm-up: workers start, files enter the page cache
        started = time.perf_counter()
        seen = sum(len(labels) for _, labels in source.batches(torch.Generator().manual_seed(2)))
        rates[workers] = seen / (time.perf_counter() - started)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="images per step (one GPU's share of the global batch)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=3, help="timed blocks per variant, alternating (the fastest counts)")
    parser.add_argument("--workers", default="1,2", help="DataLoader worker counts for the input measurement")
    parser.add_argument("--input-batches", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from cs_repro.device import hardware_name

    result = {"device": hardware_name(device), "batch": args.batch, "image_size": args.image_size,
              "torch": torch.__version__}
    for bf16 in ((False, True) if device.type == "cuda" else (False,)):
        rates = model_rates(device, args.batch, args.image_size, args.steps, bf16, args.rounds)
        key = "bf16" if bf16 else "fp32"
        result[key] = rates
        line = f"model {key}: dense {rates['dense']:.1f} images/s, CS {rates['cs']:.1f} images/s " \
               f"(CS/dense time {rates['dense'] / rates['cs']:.2f}x)"
        if args.image_size == 224:
            hours = EPOCHS * IMAGES_PER_EPOCH / (0.5 * (rates["dense"] + rates["cs"])) / 3600
            result[key]["profile_gpu_hours"] = hours
            line += f"; the imagenet profile at these rates: {hours:,.0f} device-hours"
        print(line, flush=True)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    result["input"] = {str(w): rate for w, rate in input_rates(workers, args.input_batches, 32).items()}
    for w, rate in result["input"].items():
        print(f"input: {rate:.1f} images/s with {w} DataLoader worker(s) (500x375 JPEGs -> 224 crops)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
