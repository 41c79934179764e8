"""Training throughput of the ``tsimcne`` pip package (0.4.24) on CIFAR-10, for a side-by-side
comparison with ``tsimcne_cifar.py throughput`` under the same machine load.

Runs in the peers' environment (it does not import twinlearn):

    /work/bench-venv/bin/python benchmarks/tsimcne_peer_throughput.py --threads 1

The package's own ``TSimCNE.fit`` default path is broken in 0.4.24 (``self.use_ffcv`` was
removed, ``warmup=`` is passed to a class without it), so this drives its parts directly: its
CIFAR-stem ResNet-18 (``resnet18_sm_kernel``) + MLP head, its ``InfoNCECauchy`` loss, its
``TransformedPairDataset`` with its PIL augmentations in a ``DataLoader`` (2 workers), SGD with
value clipping at 4. Lightning's own per-step overhead is left out, which favours the package.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tsimcne.imagedistortions import TransformedPairDataset, get_transforms_unnormalized
from tsimcne.losses.infonce import InfoNCECauchy
from tsimcne.models.simclr_like import make_model


def load_pil_subset(tarball: Path, n: int, seed: int = 0) -> list:
    # one sequential pass: random access into a .tar.gz re-decompresses from the start
    pick = set(np.random.default_rng(seed).choice(50000, n, replace=False).tolist())
    out, i = [], 0
    with tarfile.open(tarball, "r:*") as tar:
        for member in tar:
            if not (member.isfile() and "/train/" in member.name):
                continue
            if i in pick:
                with Image.open(BytesIO(tar.extractfile(member).read())) as img:
                    out.append((img.convert("RGB"), 0))
            i += 1
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tarball", default="/work/shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--n-images", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_pil_subset(Path(args.tarball), args.n_images)
    pairs = TransformedPairDataset(data, get_transforms_unnormalized(size=(32, 32)))
    loader = torch.utils.data.DataLoader(
        pairs, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True
    )
    model = make_model("resnet18_sm_kernel", "mlp", seed=0, out_dim=128)
    loss_fn = InfoNCECauchy()
    opt = torch.optim.SGD(model.parameters(), lr=0.03 * args.batch_size / 256, momentum=0.9, weight_decay=5e-4)
    model.train()
    it = iter(loader)
    t_wait = t_step = 0.0
    for step in range(args.warmup_steps + args.steps):
        t0 = time.perf_counter()
        (v1, v2), _ = next(it)
        t1 = time.perf_counter()
        z, _ = model(torch.cat([v1, v2]))
        loss = loss_fn(z)
        loss = loss["loss"] if isinstance(loss, dict) else loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 4.0)
        opt.step()
        t2 = time.perf_counter()
        if step >= args.warmup_steps:
            t_wait += t1 - t0
            t_step += t2 - t1
    n = args.steps * args.batch_size
    res = {
        "images_per_s_total": n / (t_wait + t_step),
        "images_per_s_model_step_only": n / t_step,
        "loader_wait_share": t_wait / (t_wait + t_step),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
