import pytest
import torch.nn as nn

from twinlearn.encoders import build_encoder, build_projector, parse_spec


def layer_types(module):
    return [type(m).__name__ for m in module]


def test_linear_is_one_affine_layer():
    enc = build_encoder("linear", 784, 8)
    assert layer_types(enc) == ["Linear"]
    assert enc[0].bias is not None and enc[0].weight.shape == (8, 784)


def test_flinear_has_bias_and_norm_no_relu():
    enc = build_encoder("flinear-1-512", 100, 16)
    assert layer_types(enc) == ["Linear", "BatchNorm1d", "Linear"]
    assert all(m.bias is not None for m in enc if isinstance(m, nn.Linear))


def test_mlp_has_no_bias_and_relu():
    enc = build_encoder("mlp-2-64", 10, 4, norm_layer="LN")
    assert layer_types(enc) == ["Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU", "Linear"]
    assert all(m.bias is None for m in enc if isinstance(m, nn.Linear))


def test_projector_matches_tldr_widths_and_ends_in_plain_batchnorm():
    proj = build_projector("mlp-2-2048", 32)
    linears = [m for m in proj if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(32, 2048), (2048, 2048), (2048, 2048)]
    assert isinstance(proj[-1], nn.BatchNorm1d) and not proj[-1].affine
    one = build_projector("linear-0-64", 8)
    assert layer_types(one) == ["Linear", "BatchNorm1d"] and one[0].out_features == 64


def test_several_widths_are_used_as_given():
    assert parse_spec("mlp-2-512-256").hidden == (512, 256)


@pytest.mark.parametrize("spec", ["mlp-2", "conv-1-3", "linear-", "mlp-1-0", "mlp-2-512-256-128", ""])
def test_malformed_specs_raise(spec):
    with pytest.raises(ValueError, match="spec|width"):
        parse_spec(spec)


def test_projector_needs_a_width_and_norm_must_be_known():
    with pytest.raises(ValueError, match="output width"):
        build_projector("linear", 8)
    with pytest.raises(ValueError, match="norm_layer"):
        build_encoder("mlp-1-8", 4, 2, norm_layer="GN")
    with pytest.raises(TypeError):
        parse_spec(3)
