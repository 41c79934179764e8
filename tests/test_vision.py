import pytest
import torch
import torch.nn as nn

from twinlearn.encoders.vision import (
    BACKBONES,
    ImageEmbedder,
    infer_feature_dim,
    make_backbone,
    make_head,
)


@pytest.mark.parametrize("name", ["resnet18_simclr", "small_cnn"])
def test_backbone_output_width(name):
    net, dim = make_backbone(name)
    out = net(torch.rand(2, 3, 32, 24))
    assert out.shape == (2, dim)
    assert infer_feature_dim(net, (3, 32, 32)) == dim


def test_cifar_stem_keeps_resolution_stock_resnet_does_not():
    cifar, _ = make_backbone("resnet18_simclr")
    stock, _ = make_backbone("resnet18")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity)
    assert stock.conv1.kernel_size == (7, 7) and stock.conv1.stride == (2, 2)
    x = torch.rand(1, 3, 32, 32)
    # the CIFAR stem keeps 32×32 into layer1; the ImageNet stem shrinks it to 8×8
    assert cifar.maxpool(cifar.relu(cifar.bn1(cifar.conv1(x)))).shape[-1] == 32
    assert stock.maxpool(stock.relu(stock.bn1(stock.conv1(x)))).shape[-1] == 8


def test_resnet50_alias_and_unknown_names():
    assert make_backbone("resnet18_cifar")[1] == 512
    assert "resnet50" in BACKBONES
    with pytest.raises(ValueError, match="backbone"):
        make_backbone("vgg")
    with pytest.raises(ValueError, match="projection_head"):
        make_head("deep", 4, 2)


def test_heads_and_last_layer_replacement():
    mlp = make_head("mlp", 8, 128)
    assert [type(m) for m in mlp] == [nn.Linear, nn.ReLU, nn.Linear]
    assert mlp[0].out_features == 1024 and mlp[-1].out_features == 128
    assert len(make_head("linear", 8, 2)) == 1
    emb = ImageEmbedder(nn.Flatten(), make_head("mlp", 12, 128, hidden_dim=1024))
    first = emb.head[0].weight.clone()
    emb.replace_last_linear(2, std=1.0, generator=torch.Generator().manual_seed(0))
    assert emb.out_dim == 2 and emb.head[-1].in_features == 1024
    assert torch.equal(emb.head[0].weight, first)
    assert 0.9 < emb.head[-1].weight.std().item() < 1.1
    assert emb(torch.rand(3, 3, 2, 2)).shape == (3, 2)
