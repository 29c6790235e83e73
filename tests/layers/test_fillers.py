"""Caffe's fillers: statistics, Caffe's fan rules, the bilinear kernel, weight-normed layers."""

import math

import numpy as np
import pytest
import torch

from netcfg.errors import ConfigErrors
from netcfg.layers.base import FillerSpec
from netcfg.layers.fillers import fill
from netcfg.net import build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def filled(shape, **kw):
    torch.manual_seed(0)
    t = torch.empty(shape)
    fill(t, FillerSpec(**kw))
    return t


def test_constant_and_uniform():
    assert torch.all(filled((3, 4), type="constant", value=0.5) == 0.5)
    t = filled((200, 50), type="uniform", min=-2, max=3)
    assert t.min() >= -2 and t.max() <= 3 and abs(t.mean().item() - 0.5) < 0.05


def test_gaussian_defaults_are_caffes():
    t = filled((400, 100), type="gaussian")
    assert abs(t.mean().item()) < 0.01 and abs(t.std().item() - 1.0) < 0.01


@pytest.mark.parametrize("norm, n", [("FAN_IN", 20 * 3 * 3), ("FAN_OUT", 64 * 3 * 3), ("AVERAGE", (20 + 64) * 9 / 2)])
def test_xavier_bound_follows_caffes_fans(norm, n):
    # conv weight (out=64, in=20, 3, 3): Caffe's fan_in = count/num, fan_out = count/channels
    t = filled((64, 20, 3, 3), type="xavier", variance_norm=norm)
    bound = math.sqrt(3.0 / n)
    assert t.abs().max().item() <= bound
    assert t.abs().max().item() > 0.95 * bound  # uniform over the whole range


@pytest.mark.parametrize("norm, n", [("FAN_IN", 1), ("FAN_OUT", 4000), ("AVERAGE", 4001 / 2)])
def test_fans_of_a_1d_blob_are_caffes(norm, n):
    # a bias or Scale blob (4000,): Caffe's fan_in = count / shape(0) = 1, fan_out = count
    bound = math.sqrt(3.0 / n)
    t = filled((4000,), type="xavier", variance_norm=norm)
    assert bound * 0.95 < t.abs().max().item() <= bound
    std = math.sqrt(2.0 / n)
    assert abs(filled((4000,), type="msra", variance_norm=norm).std().item() - std) / std < 0.05


@pytest.mark.parametrize("kind, scale", [("msra", 2.0), ("lecun", 1.0)])
def test_gaussian_families_std(kind, scale):
    t = filled((256, 128), type=kind)
    assert abs(t.std().item() - math.sqrt(scale / 128)) / math.sqrt(scale / 128) < 0.03


def test_variance_norm_accepts_lower_case():
    assert FillerSpec(type="msra", variance_norm="fan_out").variance_norm == "FAN_OUT"


def test_bilinear_matches_caffes_upsampling_kernel():
    t = filled((2, 1, 4, 4), type="bilinear")
    # Caffe's formula for kernel 4 (factor 2, center 1.5/2): rows [0.25, 0.75, 0.75, 0.25]
    w = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(t[0, 0], w[:, None] * w[None, :])
    with pytest.raises(ValueError):
        filled((2, 3), type="bilinear")


def caffe_bilinear(k: int) -> np.ndarray:
    """Caffe's BilinearFiller::Fill (include/caffe/filler.hpp), its loop over a (k, k) kernel:
    f = ceil(k / 2), c = (k - 1) / (2 f), w(x, y) = (1 - |x / f - c|) (1 - |y / f - c|)."""
    f = math.ceil(k / 2.0)
    c = (k - 1) / (2.0 * f)
    out = np.empty((k, k))
    for i in range(k * k):
        x, y = i % k, (i // k) % k
        out[y, x] = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
    return out


@pytest.mark.parametrize("k", range(1, 9))
def test_bilinear_matches_caffes_loop_for_every_kernel_size(k):
    """Odd and even sizes alike (Caffe's BilinearFillerTest fills 7 and 6): the kernel is
    symmetric, so a stride-1 Deconvolution with pad (k - 1) / 2 does not shift the image."""
    t = filled((3, 1, k, k), type="bilinear")
    want = torch.from_numpy(caffe_bilinear(k)).float()
    for channel in t:
        torch.testing.assert_close(channel[0], want)
    torch.testing.assert_close(t, t.flip(-1).flip(-2))
    if k == 3:
        w = torch.tensor([0.5, 1.0, 0.5])
        torch.testing.assert_close(t[0, 0], w[:, None] * w[None, :])


def test_positive_unitball_rows_sum_to_one():
    t = filled((5, 7), type="positive_unitball")
    assert torch.all(t >= 0) and torch.allclose(t.sum(1), torch.ones(5))
    t = filled((4, 3, 2, 2), type="positive_unitball")
    assert torch.allclose(t.flatten(1).sum(1), torch.ones(4))


@pytest.mark.parametrize("shape", [(6,), ()])
def test_positive_unitball_of_a_vector_is_caffes_ones(shape):
    """Caffe's PositiveUnitballFiller (include/caffe/filler.hpp) divides each of num() rows of
    count / num() values by its sum: a 1-d blob (a PReLU slope, a Scale) has rows of one
    value, so every value becomes 1; a scalar (num() 1, count 1) too."""
    t = filled(shape, type="positive_unitball")
    torch.testing.assert_close(t, torch.ones(shape))


def net(layer: str):
    return build_net(net_from_source(parse_yaml(f"name: t\ninputs: {{x: [3, 6, 6]}}\nlayers:\n  - {layer}\n")))


def test_fillers_reach_the_built_layer():
    n = net("{name: c, type: Convolution, num_output: 4, kernel_size: 3, weight_filler: {type: constant, value: 0.25},"
            " bias_filler: {type: constant, value: -1}}")
    assert torch.all(n.c.weight == 0.25) and torch.all(n.c.bias == -1)


def test_no_filler_keeps_pytorchs_default():
    n = net("{name: c, type: Convolution, num_output: 4, kernel_size: 3}")
    bound = 1 / math.sqrt(3 * 9)  # kaiming_uniform(a=sqrt(5)) of nn.Conv2d
    assert n.c.weight.abs().max() <= bound and n.c.weight.std() > 0


def test_filler_on_weight_normed_layer_sets_the_effective_weight():
    n = net("{name: c, type: Convolution, num_output: 4, kernel_size: 3, weight_norm: true,"
            " weight_filler: {type: constant, value: 0.5}}")
    assert torch.allclose(n.c.weight, torch.full_like(n.c.weight, 0.5))
    names = dict(n.named_parameters())
    assert "c.parametrizations.weight.original0" in names and "c.parametrizations.weight.original1" in names


@pytest.mark.parametrize("layer, where, words", [
    ("{name: ip, type: InnerProduct, num_output: 2, weight_filler: {type: bilinear}}", "layers[0].weight_filler",
     "bilinear filler needs a square 2-d kernel (a 4-d weight), not a [2, 108] tensor"),
    ("{name: d, type: Deconvolution, num_output: 3, kernel_size: [2, 4], weight_filler: {type: bilinear}}",
     "layers[0].weight_filler", "not a [3, 3, 2, 4] tensor"),
    ("{name: c, type: Convolution, num_output: 2, kernel_size: 3, bias_filler: {type: orthogonal}}",
     "layers[0].bias_filler", "orthogonal filler needs a matrix or more (2+ dimensions), not a [2] tensor"),
    ("{name: p, type: PReLU, filler: {type: orthogonal}}", "layers[0].filler", "not a [3] tensor"),
    ("{name: c, type: Convolution, num_output: 2, kernel_size: 3, weight_filler: {type: uniform, min: 1, max: 0}}",
     "layers[0].weight_filler.min", "uniform filler: min 1.0 is above max 0.0"),
])
def test_a_filler_that_cannot_fill_its_tensor_is_a_check_error(layer, where, words):
    # before: `netcfg check` passed and building the net raised a ValueError/RuntimeError traceback
    with pytest.raises(ConfigErrors) as e:
        net(layer)
    assert f"{where}: " in str(e.value) and words in str(e.value)
