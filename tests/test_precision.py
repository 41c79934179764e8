"""precision="auto": bf16 autocast only where the hardware runs it natively and the method's
quality holds in bf16; fp32 everywhere else (and always reachable by name)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import IMAGE_ESTIMATORS, TINY_PARAMS, make_tiny, tiny_images, tiny_vectors

from twinlearn import ContrastiveEmbedding, _device
from twinlearn.data.sparse import feature_store

CPU = torch.device("cpu")
#: the methods whose bf16 quality was measured to hold (benchmarks/bf16_quality.py)
BF16_SAFE = ("TLDR", "TSimCNE", "ReLIC")


@pytest.fixture
def native_bf16_cpu(monkeypatch):
    """This CPU as an AMX host sees it: the kernel lists amx_bf16."""
    monkeypatch.setattr(_device, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "amx_bf16"}))


@pytest.fixture
def avx2_cpu(monkeypatch):
    monkeypatch.setattr(_device, "cpu_flags", lambda: frozenset({"avx2", "fma"}))


@pytest.mark.parametrize("key", list(TINY_PARAMS))
def test_every_estimator_defaults_to_auto(key):
    assert type(make_tiny(key))().get_params()["precision"] == "auto"


@pytest.mark.parametrize("model, expected", [("table", "fp32"), ("network", "fp32")])
def test_contrastive_embedding_resolves_auto_by_its_model(native_bf16_cpu, model, expected):
    from twinlearn.encoders.table import EmbeddingTable
    from twinlearn.pairs import EdgePairSource

    pairs = EdgePairSource(np.arange(4), np.array([1, 2, 3, 0]), 4, CPU, torch.Generator().manual_seed(0))
    net = EmbeddingTable(np.eye(4, 2)) if model == "table" else torch.nn.Linear(3, 2)
    store = None if model == "table" else feature_store(tiny_vectors(4, 3), CPU)
    # the cosine kernel: the torch path (the fused CPU kernel of a table ignores autocast anyway)
    engine = ContrastiveEmbedding(net, metric="cosine", n_epochs=1, early_exaggeration=False)
    assert engine.params["precision"] == "auto"
    assert engine.fit(pairs, n=4, store=store).precision_ == expected


@pytest.mark.parametrize("flags, native", [
    ("fpu avx2 fma", False),
    ("fpu avx2 avx512f avx512bw", False),  # AVX-512 alone: oneDNN only emulates bf16
    ("fpu avx2 avx512f avx512_bf16", True),
    ("fpu avx512f amx_tile amx_bf16", True),
])
def test_cpu_flags_are_read_from_the_kernels_list(tmp_path, flags, native):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
                    f"flags\t\t: {flags}\n")
    assert _device.cpu_flags(str(path)) == frozenset(flags.split())
    assert bool(_device.cpu_flags(str(path)) & _device.NATIVE_BF16_FLAGS) is native
    assert _device.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_auto_is_fp32_without_the_flags(avx2_cpu):
    assert not _device.cpu_has_fast_bf16()
    assert _device.resolve_precision("auto", CPU, method_supports_bf16=True) == "fp32"


def test_auto_is_bf16_with_the_flags_for_a_bf16_safe_method_only(native_bf16_cpu):
    assert _device.resolve_precision("auto", CPU, method_supports_bf16=True) == "bf16"
    assert _device.resolve_precision("auto", CPU, method_supports_bf16=False) == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_named_precision_is_kept(native_bf16_cpu, precision):
    assert _device.resolve_precision(precision, CPU, method_supports_bf16=False) == precision


def test_without_a_flags_file_torchs_cpu_probes_decide(monkeypatch):
    monkeypatch.setattr(_device, "cpu_flags", lambda: frozenset())
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not _device.cpu_has_fast_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert _device.cpu_has_fast_bf16()


@pytest.mark.parametrize("gpu_has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_gpu_follows_its_native_bf16(monkeypatch, avx2_cpu, gpu_has_bf16, expected):
    asked = []
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: asked.append(including_emulation) or gpu_has_bf16)
    assert _device.resolve_precision("auto", torch.device("cuda"), method_supports_bf16=True) == expected
    assert asked == [False]  # emulated bf16 (pre-Ampere) is not native


@pytest.mark.parametrize("key", list(TINY_PARAMS))
def test_each_method_resolves_auto_by_its_measured_bf16_safety(native_bf16_cpu, key):
    expected = "bf16" if key in BF16_SAFE else "fp32"
    assert make_tiny(key)._precision() == expected
    assert make_tiny(key, precision="fp32")._precision() == "fp32"


@pytest.mark.parametrize("key", BF16_SAFE)
def test_auto_trains_a_bf16_safe_method_in_bf16_autocast_where_native(native_bf16_cpu, key):
    data = tiny_images() if key in IMAGE_ESTIMATORS else tiny_vectors()
    auto, fp32 = make_tiny(key).fit(data), make_tiny(key, precision="fp32").fit(data)
    assert (auto.precision_, fp32.precision_) == ("bf16", "fp32")
    assert auto.loss_history_ != fp32.loss_history_  # bf16 rounding moved the loss: autocast ran


@pytest.mark.parametrize("key", ["TLDR", "CNE(parametric=True)"])
def test_auto_on_a_host_without_native_bf16_trains_exactly_as_fp32(avx2_cpu, key):
    auto, fp32 = make_tiny(key).fit(tiny_vectors()), make_tiny(key, precision="fp32").fit(tiny_vectors())
    assert auto.precision_ == fp32.precision_ == "fp32"
    np.testing.assert_array_equal(auto.transform(tiny_vectors()), fp32.transform(tiny_vectors()))
    assert auto.loss_history_ == fp32.loss_history_


@pytest.mark.parametrize("key", list(TINY_PARAMS))
def test_a_fitted_estimator_records_the_precision_auto_resolved_to(fitted_tiny, key):
    assert fitted_tiny[key].precision_ == fitted_tiny[key]._precision() in ("fp32", "bf16")


def test_the_resolved_precision_is_recorded_in_the_model_file(avx2_cpu, tmp_path):
    from twinlearn import TLDR, io

    model = make_tiny("TLDR").fit(tiny_vectors())
    model.save(tmp_path / "m.safetensors")
    _, meta = io.load_tensors(tmp_path / "m.safetensors", kind="model")
    assert meta["params"]["precision"] == "auto" and meta["precision"] == "fp32"
    assert TLDR().load(tmp_path / "m.safetensors", init=True).precision_ == "fp32"
