"""Seconds per ReLIC-shaped training step of a ResNet-18 (CIFAR stem), eager vs torch.compile,
one forward per view vs both views in one forward.

The step: online network forward + backward on two views of a batch, EMA-target forward (no
gradient) on both views, Adam. No projector, loss or augmentation: this isolates the part of
ReLIC / t-SimCNE training that convolutions dominate.

    PYTHONPATH=src python benchmarks/resnet_step_levers.py eager
    PYTHONPATH=src python benchmarks/resnet_step_levers.py compile     # ~1 min per compile
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from twinlearn.encoders.vision import _torchvision_resnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("eager", "compile"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    online, _ = _torchvision_resnet("resnet18", cifar_stem=True)
    target, _ = _torchvision_resnet("resnet18", cifar_stem=True)
    target.requires_grad_(False)
    online = online.to(memory_format=torch.channels_last)
    target = target.to(memory_format=torch.channels_last)
    run_online, run_target = (torch.compile(online), torch.compile(target)) if args.mode == "compile" else (online, target)
    x1 = torch.rand(args.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    x2 = torch.rand_like(x1)
    optimizer = torch.optim.Adam(online.parameters(), 1e-4)

    def step(one_call: bool) -> None:
        both = torch.cat([x1, x2])
        out = run_online(both) if one_call else torch.cat([run_online(x1), run_online(x2)])
        with torch.no_grad():
            tgt = run_target(both) if one_call else torch.cat([run_target(x1), run_target(x2)])
        loss = (out * tgt).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for one_call in (False, True):
        start = time.perf_counter()
        step(one_call)  # warm-up (and compilation)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.steps):
            step(one_call)
        seconds = (time.perf_counter() - start) / args.steps
        print(json.dumps({"mode": args.mode, "views": "one call" if one_call else "one call per view",
                          "first_step_s": round(first, 1), "s_per_step": round(seconds, 2),
                          "images_per_s": round(args.batch_size / seconds, 1),
                          "torch_threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
