"""Does each method keep its quality when trained in bf16 autocast? bf16 vs fp32 at equal
epochs and the same seed, per method (the evidence behind ``precision="auto"``).

    PYTHONPATH=src python benchmarks/bf16_quality.py --methods tldr cne-param cne relic tsimcne

On a CPU with native bf16 (AMX / AVX512-BF16) the bf16 runs use it. On one without (AVX2 only) torch runs bf16 matrix products and convolutions
with a slow reference kernel (~20-1000x fp32), far too slow for a real run. What a native
bf16 unit (AMX, AVX512-BF16, a GPU's tensor cores) computes is fixed, though: bf16 inputs,
exact products, fp32 accumulation, one rounding of the result to bf16. :class:`NativeBf16Numerics`
computes exactly that for those ops (inputs are bf16 already, so upcasting them loses nothing;
the fp32 kernel accumulates in fp32; the output is rounded to bf16), while torch's own autocast
still decides which ops run in bf16 and the backward pass runs through the same ops. Only the
summation order differs from a given native kernel, as it differs between two native kernels;
``--self-check`` measures emulated vs torch's reference bf16 kernels on this CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from common import OUT_DIR, cifar_subsets, command_line, machine_info
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from twinlearn import CNE, TLDR, ReLIC, TSimCNE
from twinlearn.data.datasets import find_shared_data
from twinlearn.metrics import knn_accuracy, knn_recall, linear_probe
from twinlearn.training import trainer as trainer_module

aten = torch.ops.aten
#: this CPU computes bf16 matrix products itself (AMX / AVX512-BF16): no emulation needed
NATIVE = trainer_module.cpu_has_fast_bf16()
#: the ops a native bf16 unit runs in hardware (everything else is elementwise or a reduction,
#: computed in fp32 internally on every CPU)
MATRIX_OPS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
              aten.convolution.default, aten.convolution_backward.default}


class NativeBf16Numerics(TorchDispatchMode):
    """Run bf16 matrix products and convolutions as native bf16 hardware does (see above)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        is_bf16 = lambda t: isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16
        if func not in MATRIX_OPS or not any(is_bf16(t) for t in tree_leaves((args, kwargs))):
            return func(*args, **kwargs)
        args, kwargs = tree_map(lambda t: t.float() if is_bf16(t) else t, (args, kwargs))
        out = func(*args, **kwargs)
        return tree_map(lambda t: t.bfloat16() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, out)


def train(make: Callable[[str], object], fit: Callable[[object], dict], precision: str) -> dict:
    """``fit(make(precision))`` timed; bf16 on the CPU's own bf16 units where it has them, else
    under native-bf16 numerics (the trainer's fallback to fp32 switched off for the run)."""
    start = time.perf_counter()
    if precision == "fp32" or NATIVE:
        metrics = fit(make(precision))
    else:
        saved = trainer_module.cpu_has_fast_bf16
        trainer_module.cpu_has_fast_bf16 = lambda: True
        try:
            with NativeBf16Numerics():
                metrics = fit(make("bf16"))
        finally:
            trainer_module.cpu_has_fast_bf16 = saved
    return {**metrics, "fit_s": round(time.perf_counter() - start, 1)}


def mnist(n_train: int, n_test: int):
    with np.load(find_shared_data("mnist.npz") / "mnist.npz") as f:
        x, y, xt, yt = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    keep = np.random.default_rng(0).choice(len(x), n_train, replace=False)  # the npz is sorted by class
    flat = lambda a: (a.reshape(len(a), -1) / 255.0).astype(np.float32)
    return flat(x[keep]), y[keep], flat(xt[:n_test]), yt[:n_test]


def map_knn_accuracy(Y: np.ndarray, y: np.ndarray) -> float:
    """10-NN accuracy of a map: a random half of its points classifies the other half."""
    order = np.random.default_rng(0).permutation(len(Y))
    a, b = order[: len(Y) // 2], order[len(Y) // 2 :]
    return knn_accuracy(Y[a], y[a], Y[b], y[b], n_neighbors=10)


def run_tldr(args, precision: str, seed: int = 0) -> dict:
    x, y, xt, yt = mnist(args.n_mnist, 10_000)

    def fit(model):
        model.fit(x)
        z, zt = model.transform(x), model.transform(xt)
        return {"knn_acc": knn_accuracy(z, y, zt, yt, n_neighbors=10), "recall10": knn_recall(xt, zt, 10),
                "loss_last": model.loss_history_[-1]}

    return train(lambda p: TLDR(n_components=32, n_epochs=args.tldr_epochs, precision=p, random_state=seed), fit, precision)


def run_cne(args, precision: str, parametric: bool, seed: int = 0) -> dict:
    x, y, _, _ = mnist(args.n_mnist, 1)

    def fit(model):
        return {"knn_acc_map": map_knn_accuracy(model.fit_transform(x), y), "loss_last": model.loss_history_[-1]}

    epochs = args.cne_param_epochs if parametric else args.cne_epochs
    return train(lambda p: CNE(parametric=parametric, n_epochs=epochs, precision=p, random_state=seed), fit, precision)


def run_images(args, precision: str, method: str, seed: int = 0) -> dict:
    x, y, xt, yt = cifar_subsets(args.n_cifar, args.n_cifar)

    def fit(model):
        model.fit(x)
        f, ft = model.transform(x), model.transform(xt)
        out = {"knn_acc": knn_accuracy(f, y, ft, yt, n_neighbors=10), "loss_last": model.loss_history_[-1]}
        if method == "relic":
            out["linear_probe"] = linear_probe(f, y, ft, yt)
        return out

    def make(p):
        if method == "relic":
            return ReLIC(backbone=args.backbone, n_epochs=args.image_epochs, batch_size=128, precision=p,
                         channels_last=True, random_state=seed)
        e = args.image_epochs
        return TSimCNE(backbone=args.backbone, total_epochs=[e, max(1, e // 4), max(1, e // 2)],
                       batch_size=128, precision=p, device="cpu", channels_last=True, random_state=seed)

    return train(make, fit, precision)


def self_check() -> dict:
    """Emulated vs torch's reference bf16 kernels on this CPU: share of bit-identical outputs
    and the largest difference in units of the bf16 spacing at the output's magnitude."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 1024, generator=gen), torch.randn(1024, 256, generator=gen)
    img, w = torch.randn(8, 16, 16, 16, generator=gen), torch.randn(32, 16, 3, 3, generator=gen)
    cases = {"mm": lambda: a @ b, "conv": lambda: torch.nn.functional.conv2d(img, w, padding=1)}
    out = {}
    for name, op in cases.items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = op().float()
            with NativeBf16Numerics():
                emu = op().float()
        ulp = torch.finfo(torch.bfloat16).eps * ref.abs().clamp_min(1e-30)
        out[name] = {"identical": float((ref == emu).float().mean()),
                     "max_ulps": float(((ref - emu).abs() / ulp).max())}
    return out


def summarise(results: dict, method: str, seeds: int) -> dict:
    """Per metric: mean and sample spread of each precision over the seeds, and bf16 - fp32."""
    runs = {p: [results[f"{method} {p} seed {s}"] for s in range(seeds)] for p in ("fp32", "bf16")}
    out = {}
    for metric in ("knn_acc", "recall10", "knn_acc_map", "linear_probe"):
        if metric not in runs["fp32"][0]:
            continue
        values = {p: np.array([r[metric] for r in rs]) for p, rs in runs.items()}
        out[metric] = {**{f"{p}_mean": round(float(v.mean()), 4) for p, v in values.items()},
                       **{f"{p}_sd": round(float(v.std(ddof=1)), 4) for p, v in values.items() if seeds > 1},
                       "bf16_minus_fp32": round(float(values["bf16"].mean() - values["fp32"].mean()), 4)}
    out["fit_s"] = {p: round(float(np.mean([r["fit_s"] for r in rs])), 1) for p, rs in runs.items()}
    return out


RUNS = {
    "tldr": run_tldr,
    "cne-param": lambda a, p, seed=0: run_cne(a, p, parametric=True, seed=seed),
    "cne": lambda a, p, seed=0: run_cne(a, p, parametric=False, seed=seed),
    "relic": lambda a, p, seed=0: run_images(a, p, "relic", seed),
    "tsimcne": lambda a, p, seed=0: run_images(a, p, "tsimcne", seed),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--n-mnist", type=int, default=20_000)
    parser.add_argument("--tldr-epochs", type=int, default=10)
    parser.add_argument("--cne-epochs", type=int, default=100)
    parser.add_argument("--cne-param-epochs", type=int, default=30)
    parser.add_argument("--n-cifar", type=int, default=2000)
    parser.add_argument("--image-epochs", type=int, default=4)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds 0..K-1 of each precision: the difference is set against the seed spread")
    parser.add_argument("--self-check", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    record = {"command": command_line(), "machine": machine_info(), "args": vars(args),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": {}, "summary": {},
              "bf16_numerics": "native" if NATIVE else "emulated"}
    if args.self_check:
        record["self_check"] = self_check()
        print("self-check", record["self_check"], flush=True)
    for method in args.methods:
        for seed in range(args.seeds):
            for precision in ("fp32", "bf16"):
                name = f"{method} {precision} seed {seed}"
                record["results"][name] = RUNS[method](args, precision, seed=seed)
                print(name, record["results"][name], flush=True)
                OUT_DIR.mkdir(parents=True, exist_ok=True)  # after every run: a killed queue keeps its figures
                (OUT_DIR / "bf16_quality.json").write_text(json.dumps(record, indent=2))
        record["summary"][method] = summarise(record["results"], method, args.seeds)
        print(method, record["summary"][method], flush=True)
    (OUT_DIR / "bf16_quality.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
