"""Pooling: Caffe's output sizes and AVE divisors, checked against a hand-written Caffe loop."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from netcfg.errors import ConfigErrors
from netcfg.layers.base import Blob
from netcfg.layers.pool import Pooling
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def caffe_size(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """Caffe's PoolingLayer::Reshape, verbatim (its clip applies only when pad > 0)."""
    span = size + 2 * p - k
    out = (math.ceil(span / s) if ceil else math.floor(span / s)) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def caffe_windows(size: int, k: int, s: int, p: int, n: int) -> list[tuple[int, int, int]]:
    """(start, end, AVE divisor) of each of the first n windows, as Caffe's forward loop."""
    out = []
    for o in range(n):
        start = o * s - p
        end = min(start + k, size + p)
        divisor = end - start
        out.append((max(start, 0), min(end, size), divisor))
    return out


def caffe_pool(x: torch.Tensor, op: str, ks, ss, ps, outs) -> torch.Tensor:
    """Caffe's MAX/AVE forward over the last len(ks) axes of x (N, C, *spatial), by loops."""
    xs = x.detach().double().numpy()
    wins = [caffe_windows(n, k, s, p, o) for n, k, s, p, o in zip(xs.shape[2:], ks, ss, ps, outs)]
    y = np.empty((*xs.shape[:2], *outs))
    for idx in itertools.product(*(range(o) for o in outs)):
        patch = xs[(..., *(slice(w[i][0], w[i][1]) for w, i in zip(wins, idx)))].reshape(*xs.shape[:2], -1)
        if op == "MAX":
            y[(..., *idx)] = patch.max(-1)
        else:
            y[(..., *idx)] = patch.sum(-1) / math.prod(w[i][2] for w, i in zip(wins, idx))
    return torch.from_numpy(y)


def pooling(**kw) -> Pooling:
    return Pooling(name="p", type="Pooling", **kw)


def run(layer: Pooling, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, Blob]:
    x = torch.randn(2, *shape)
    (top,) = layer.infer([Blob(shape)])
    y = layer.build([Blob(shape)])(x)
    assert tuple(y.shape[1:]) == top.shape
    return x, y, top


@pytest.fixture
def one_thread():
    """Thousands of tiny pooling calls: thread start-up would dominate on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.usefixtures("one_thread")
def test_1d_sweep_matches_caffe():
    """Every kernel/stride/pad/size/round mode: Caffe's size (bar the documented clip) and values."""
    for size, k, s, mode, op in itertools.product(range(1, 8), range(1, 5), range(1, 4), ("CEIL", "FLOOR"), ("MAX", "AVE")):
        for p in range(k):
            ceil = mode == "CEIL"
            want = caffe_size(size, k, s, p, ceil)
            if want < 1:
                with pytest.raises(ValueError, match="larger than the padded input"):
                    pooling(pool=op, kernel_size=k, stride=s, pad=p, round_mode=mode).infer([Blob((2, size))])
                continue
            # the one deviation: Caffe keeps a last window wholly outside the input
            if p == 0 and (want - 1) * s >= size:
                want -= 1
            layer = pooling(pool=op, kernel_size=k, stride=s, pad=p, round_mode=mode)
            x, y, top = run(layer, (2, size))
            assert top.shape == (2, want), (size, k, s, p, mode)
            ref = caffe_pool(x, op, (k,), (s,), (p,), (want,))
            torch.testing.assert_close(y.double(), ref, msg=str((size, k, s, p, mode, op)))


@pytest.mark.usefixtures("one_thread")
def test_2d_random_configs_match_caffe():
    rng = random.Random(0)
    for _ in range(150):
        kh, kw = rng.randint(1, 5), rng.randint(1, 5)
        cfg = dict(pool=rng.choice(["MAX", "AVE"]), kernel_h=kh, kernel_w=kw, stride_h=rng.randint(1, 3),
                   stride_w=rng.randint(1, 3), pad_h=rng.randrange(kh), pad_w=rng.randrange(kw),
                   round_mode=rng.choice(["CEIL", "FLOOR"]))
        shape = (3, rng.randint(kh, 9), rng.randint(kw, 9))
        layer = pooling(**cfg)
        x, y, top = run(layer, shape)
        (_, _), (sh, sw), (ph, pw) = layer.geometry()
        ref = caffe_pool(x, cfg["pool"], (kh, kw), (sh, sw), (ph, pw), top.shape[1:])
        torch.testing.assert_close(y.double(), ref, msg=str(cfg))


def test_matches_torch_functional_in_the_common_case():
    x = torch.randn(2, 4, 11, 11)
    y = build_net(net_from_source(parse_yaml("""
name: t
inputs: {data: [4, 11, 11]}
layers:
  - {name: max, type: Pooling, bottom: data, pool: MAX, kernel_size: 3, stride: 2}
  - {name: ave, type: Pooling, bottom: data, pool: AVE, kernel_size: 2, stride: 2, pad: 1, round_mode: FLOOR}
""")))(data=x)
    torch.testing.assert_close(y["max"], F.max_pool2d(x, 3, 2, ceil_mode=True))
    torch.testing.assert_close(y["ave"], F.avg_pool2d(x, 2, 2, 1))
    assert y["max"].shape == (2, 4, 5, 5)  # ceil: 11 -> 5, as Caffe (floor would also give 5)


def test_ceil_keeps_a_partial_window():
    _, y, top = run(pooling(kernel_size=3, stride=2), (1, 6, 6))
    assert top.shape == (1, 3, 3)  # floor would give 2
    _, _, top = run(pooling(kernel_size=3, stride=2, round_mode="FLOOR"), (1, 6, 6))
    assert top.shape == (1, 2, 2)


def test_pad_above_half_kernel_works():
    """PyTorch refuses pad > kernel / 2; Caffe allows any pad < kernel."""
    for op in ("MAX", "AVE"):
        layer = pooling(pool=op, kernel_size=3, stride=2, pad=2)
        x, y, top = run(layer, (2, 5, 7))
        ref = caffe_pool(x, op, (3, 3), (2, 2), (2, 2), top.shape[1:])
        torch.testing.assert_close(y.double(), ref)


def test_kernel_past_the_input_is_clipped_as_in_caffe():
    """ceil mode: kernel 3, stride 2 on a 2x2 map gives one window over the whole map."""
    x, y, top = run(pooling(pool="AVE", kernel_size=3, stride=2), (2, 2, 2))
    assert top.shape == (2, 1, 1)
    torch.testing.assert_close(y, x.mean((-2, -1), keepdim=True))


def test_global_pooling():
    x, y, top = run(pooling(pool="AVE", global_pooling=True), (3, 5, 6))
    assert top.shape == (3, 1, 1)
    torch.testing.assert_close(y, x.mean((-2, -1), keepdim=True))
    x, y, top = run(pooling(global_pooling=True), (3, 7))
    assert top.shape == (3, 1)
    torch.testing.assert_close(y, x.amax(-1, keepdim=True))


def test_1d_and_2d_flops():
    layer = pooling(kernel_size=2, stride=2)
    (top,) = layer.infer([Blob((4, 8, 8))])
    assert layer.flops([Blob((4, 8, 8))], [top]) == 4 * 4 * 4 * 4
    (top,) = layer.infer([Blob((4, 8))])
    assert top.shape == (4, 4) and layer.flops([Blob((4, 8))], [top]) == 4 * 4 * 2


def test_max_gradient_flows_to_one_element_per_window():
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    pooling(kernel_size=2, stride=2).build([Blob((1, 4, 4))])(x).sum().backward()
    assert x.grad.sum() == 4


def _net(layer: str, shape: str = "[3, 8, 8]") -> str:
    return f"name: t\ninputs: {{data: {shape}}}\nlayers:\n  - {{name: pool1, type: Pooling, {layer}}}\n"


@pytest.mark.parametrize("layer, message", [
    ("pool: AVG, kernel_size: 2", "invalid value 'AVG'"),
    ("pool: MAX", "give kernel_size"),
    ("kernel_size: 3, pad: 3", "pad [3, 3] must be smaller than the kernel [3, 3]"),
    ("kernel_h: 3, kernel_w: 2, pad_w: 2", "pad [0, 2] must be smaller than the kernel [3, 2]"),
    ("kernel_size: 0", "kernel_size must be >= 1"),
    ("kernel_size: 2, stride: 0", "stride must be >= 1"),
    ("global_pooling: true, kernel_size: 2", "global_pooling takes the kernel from the input"),
    ("global_pooling: true, stride: 2", "global_pooling needs stride 1 and pad 0"),
    ("kernel_size: 2, round_mode: ROUND", "invalid value 'ROUND'"),
])
def test_validation_errors(layer, message):
    with pytest.raises(ConfigErrors) as e:
        net_from_source(parse_yaml(_net(layer)))
    assert message in str(e.value)
    assert "<string>:4:" in e.value.render()


@pytest.mark.parametrize("layer, shape, message", [
    ("kernel_size: 9, round_mode: FLOOR", "[3, 8, 8]", "kernel 9 is larger than the padded input 8"),
    ("kernel_size: 2", "[3]", "expects a 2-d or 3-d input"),
    ("kernel_size: 2", "[2, 3, 8, 8]", "got shape [2, 3, 8, 8]"),
    ("kernel_size: 2", "{shape: [3, 8], dtype: int64}", "needs a floating-point input, got int64"),
])
def test_shape_errors_are_located(layer, shape, message):
    with pytest.raises(ConfigErrors) as e:
        build_graph(net_from_source(parse_yaml(_net(layer, shape))))
    assert message in str(e.value)
    assert "layer 'pool1'" in str(e.value)
    assert "<string>:4:" in e.value.render()


@pytest.mark.parametrize("op", ["MAX", "AVE"])
def test_floor_pooling_for_old_onnx_gives_the_eager_numbers(op, one_thread):
    # ONNX below opset 10 has no ceil_mode: export pools rounding down, padding Caffe's last
    # windows itself; eager training keeps ceil_mode (no padding copy: 1.5-2.5x faster there)
    from netcfg.layers.pool import Pool, floor_pooling

    partial = 0
    for size, k, s in itertools.product(range(4, 9), (2, 3), (1, 2, 3)):
        for p in range(k):
            shape = (2, size, size + 1)
            module = pooling(pool=op, kernel_size=k, stride=s, pad=p).build([Blob(shape)])
            assert isinstance(module, Pool)
            x = torch.randn(2, *shape, dtype=torch.float64)
            eager = module(x)
            with floor_pooling(module):
                assert module.floor_only
                floored = module(x)
            assert not module.floor_only
            torch.testing.assert_close(floored, eager, rtol=1e-12, atol=1e-12)
            partial += module.ceil
    assert partial > 20  # the grid has Caffe's rounded-up last windows to compare
