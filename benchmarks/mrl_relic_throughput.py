"""Training throughput (images/s) of Matryoshka ReLIC: twinlearn vs mrl-pytorch, side by side.

Same work in both: ResNet-18 with the CIFAR stem, batch 64, nesting 8…512, projector 64, two
augmented views per image, Adam, EMA target update every step, CIFAR-10 images. Each run trains
two "epochs" of ``--steps`` batches on a random subset of the training set and reports the second
(warm) epoch. mrl-pytorch is driven through its own classes (``mrl.mrl.ReLIC``, ``relic_loss``,
``mrl.aug`` transforms, a DataLoader as in its ``train_relic``), since its installed
``mrl_train`` script does not start; it needs the virtual environment where it is installed:

    PYTHONPATH=src /work/bench-venv/bin/python benchmarks/mrl_relic_throughput.py --impl mrl-pytorch
    PYTHONPATH=src python benchmarks/mrl_relic_throughput.py --impl twinlearn [--precision bf16 --channels-last]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def cifar_subset(n: int, seed: int = 0) -> np.ndarray:
    from twinlearn.data.images import load_cifar10

    x_train = load_cifar10()[0]
    return x_train[np.random.default_rng(seed).choice(len(x_train), n, replace=False)]


def run_twinlearn(images: np.ndarray, batch: int, precision: str, channels_last: bool) -> float:
    from twinlearn import ReLIC

    model = ReLIC(backbone="resnet18", cifar_stem=True, n_epochs=2, batch_size=batch,
                  precision=precision, channels_last=channels_last, random_state=0)
    model.fit(images)
    return len(images) / model.epoch_seconds_[1]


def run_mrl_pytorch(images: np.ndarray, batch: int) -> float:
    import torch
    from PIL import Image

    from mrl.aug import ViewGenerator, get_training_transforms
    from mrl.mrl import ReLIC, relic_loss
    from mrl.utils import get_encoder

    torch.manual_seed(42)
    model = ReLIC(get_encoder("resnet18", modify_model=True), proj_out_dim=64)
    views = ViewGenerator(get_training_transforms(32))
    data = [Image.fromarray(img) for img in images]
    loader = torch.utils.data.DataLoader(
        [(img, 0) for img in data], batch_size=batch, shuffle=True, drop_last=True, num_workers=0,
        collate_fn=lambda items: [torch.stack(v) for v in zip(*[views(img) for img, _ in items])],
    )
    optimizer = torch.optim.Adam(list(model.online_encoder.parameters()) + [model.t_prime],
                                 lr=3e-4, weight_decay=1e-5)
    seconds = []
    step = 0
    for _ in range(2):
        start = time.perf_counter()
        for x1, x2 in loader:
            o1, o2, t1, t2 = model(x1, x2)
            loss = 0.0
            for i in range(len(o1)):
                loss = loss + relic_loss(o1[i], t2[i], model.t_prime, 1.0)
                loss = loss + relic_loss(o2[i], t1[i], model.t_prime, 1.0)
            loss = loss / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step > 1:
                model.update_params(0.995)
            else:
                model.copy_params()
            step += 1
        seconds.append(time.perf_counter() - start)
    return len(images) / seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("twinlearn", "mrl-pytorch"), required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    import torch

    images = cifar_subset(args.steps * args.batch_size)
    if args.impl == "twinlearn":
        ips = run_twinlearn(images, args.batch_size, args.precision, args.channels_last)
    else:
        ips = run_mrl_pytorch(images, args.batch_size)
    print(json.dumps({"impl": args.impl, "images_per_s": round(ips, 2), "precision": args.precision,
                      "channels_last": args.channels_last, "batch": args.batch_size, "steps": args.steps,
                      "torch_threads": torch.get_num_threads(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}), flush=True)


if __name__ == "__main__":
    main()
