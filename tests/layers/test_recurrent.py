"""Embed, LSTM and GRU against torch references, shape inference, validation and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from netcfg.errors import ConfigErrors
from netcfg.layers.base import Blob
from netcfg.layers._registry import lookup
from netcfg.net import build_graph, build_net
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml


def spec(**fields):
    return lookup(fields["type"]).model_validate({"name": "x", **fields})


def net_text(inputs: str, layer: str) -> str:
    return f"name: t\ninputs: {inputs}\nlayers:\n  - {layer}\n"


def errors(text: str, *, graph: bool = False) -> str:
    with pytest.raises(ConfigErrors) as e:
        s = net_from_source(parse_yaml(text))
        if graph:
            build_graph(s)
    return e.value.render()


# ---------------------------------------------------------------- Embed


@pytest.mark.parametrize("shape", [(), (7,), (3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_embed_matches_f_embedding(shape, bias):
    s = spec(type="Embed", num_output=4, input_dim=11, bias_term=bias)
    m = s.build([Blob(shape, "int64")])
    x = torch.randint(0, 11, (2, *shape))
    ref = F.embedding(x, m.weight) + (m.bias if bias else 0)
    y = m(x)
    torch.testing.assert_close(y, ref)
    assert tuple(y.shape[1:]) == s.infer([Blob(shape, "int64")])[0].shape == (*shape, 4)
    assert s.blob_names() == [n for n, _ in m.named_parameters()]
    assert s.blob_names() == (["weight", "bias"] if bias else ["weight"])


def test_embed_in_a_net_with_fillers_and_uint8_ids():
    text = net_text("{ids: {shape: [6], dtype: uint8}}",
                    "{name: emb, type: Embed, num_output: 3, input_dim: 256, "
                    "weight_filler: {type: constant, value: 0.5}, bias_filler: {type: constant, value: 1}}")
    net = build_net(net_from_source(parse_yaml(text)))
    y = net(ids=torch.randint(0, 256, (2, 6), dtype=torch.uint8))["emb"]
    assert y.shape == (2, 6, 3)
    assert torch.all(y == 1.5)


def test_embed_rejects_float_input_and_says_what_to_set():
    msg = errors(net_text("{tokens: [10]}", "{name: emb, type: Embed, num_output: 3, input_dim: 5}"), graph=True)
    assert "<string>:4:" in msg and "Embed layer 'emb'" in msg
    assert "token ids must be integers, got a float32 input" in msg and "dtype: int64" in msg


def test_embed_validation():
    msg = errors(net_text("{t: {shape: [4], dtype: int64}}", "{name: e, type: Embed, num_output: 0, input_dim: 5}"))
    assert "layers[0].num_output" in msg and "greater than or equal to 1" in msg
    msg = errors(net_text("{t: {shape: [4], dtype: int64}}", "{name: e, type: Embed, num_output: 3}"))
    assert "missing required key 'input_dim'" in msg


# ---------------------------------------------------------------- LSTM / GRU

CONFIGS = [
    dict(num_layers=1, bidirectional=False, return_sequence=True),
    dict(num_layers=2, bidirectional=False, return_sequence=False, dropout=0.2),
    dict(num_layers=1, bidirectional=True, return_sequence=True, bias_term=False),
    dict(num_layers=3, bidirectional=True, return_sequence=False),
]


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_rnn_matches_torch_and_infer(kind, cfg):
    s = spec(type=kind, num_output=5, **cfg)
    x = Blob((7, 3))
    m = s.build([x]).eval()
    ref = getattr(nn, kind)(3, 5, cfg["num_layers"], bias=cfg.get("bias_term", True), batch_first=True,
                            bidirectional=cfg["bidirectional"]).eval()
    ref.load_state_dict(m.state_dict())
    inp = torch.randn(2, 7, 3)
    out, h = ref(inp)
    h = h[0] if kind == "LSTM" else h
    y = m(inp)
    if cfg["return_sequence"]:
        torch.testing.assert_close(y, out)
    elif cfg["bidirectional"]:  # forward's last step, backward's first step
        torch.testing.assert_close(y, torch.cat([out[:, -1, :5], out[:, 0, 5:]], -1))
        torch.testing.assert_close(y, torch.cat([h[-2], h[-1]], -1))
    else:
        torch.testing.assert_close(y, out[:, -1])
    assert tuple(y.shape[1:]) == s.infer([x])[0].shape
    assert s.blob_names() == [n for n, _ in m.named_parameters()]


def test_lstm_matches_hand_written_cell():
    s = spec(type="LSTM", num_output=4)
    m = s.build([Blob((5, 3))])
    x = torch.randn(2, 5, 3)
    w_ih, w_hh, b = m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0 + m.bias_hh_l0
    h = c = torch.zeros(2, 4)
    outs = []
    for t in range(5):
        i, f, g, o = (x[:, t] @ w_ih.T + h @ w_hh.T + b).chunk(4, -1)  # torch's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    torch.testing.assert_close(m(x), torch.stack(outs, 1))


def test_gru_matches_hand_written_cell():
    s = spec(type="GRU", num_output=4, return_sequence=False)
    m = s.build([Blob((5, 3))])
    x = torch.randn(2, 5, 3)
    h = torch.zeros(2, 4)
    for t in range(5):
        ri, zi, ni = (x[:, t] @ m.weight_ih_l0.T + m.bias_ih_l0).chunk(3, -1)
        rh, zh, nh = (h @ m.weight_hh_l0.T + m.bias_hh_l0).chunk(3, -1)
        r, z = torch.sigmoid(ri + rh), torch.sigmoid(zi + zh)
        n = torch.tanh(ni + r * nh)
        h = (1 - z) * n + z * h
    torch.testing.assert_close(m(x), h)


def test_rnn_fillers_cover_every_layer_and_direction():
    s = spec(type="LSTM", num_output=3, num_layers=2, bidirectional=True,
             weight_filler={"type": "constant", "value": 0.25}, bias_filler={"type": "constant", "value": -1})
    m = s.build([Blob((4, 2))])
    s.fill(m)
    for name, p in m.named_parameters():
        assert torch.all(p == (0.25 if name.startswith("weight_") else -1.0)), name


def test_rnn_param_entries_follow_torch_order_in_a_net():
    text = net_text("{seq: [6, 3]}", "{name: rnn, type: GRU, num_output: 4, num_layers: 2, dropout: 0.5, "
                                     "param: [{lr_mult: 0}, {lr_mult: 2}]}")
    net = build_net(net_from_source(parse_yaml(text)))
    infos = {i.name: i.lr_mult for i in net.param_infos()}
    assert infos["rnn.weight_ih_l0"] == 0 and infos["rnn.weight_hh_l0"] == 2 and infos["rnn.bias_ih_l0"] == 1
    assert not net.rnn.weight_ih_l0.requires_grad
    assert net(seq=torch.randn(2, 6, 3))["rnn"].shape == (2, 6, 4)
    graph = build_graph(net_from_source(parse_yaml(text)))
    assert graph.nodes[0].params == sum(p.numel() for p in net.parameters())


def test_embed_then_lstm_then_classifier_learns_shapes():
    text = """
name: seqcls
inputs:
  tokens: {shape: [9], dtype: int64}
  label: {shape: [], dtype: int64}
layers:
  - {name: emb, type: Embed, bottom: tokens, num_output: 8, input_dim: 20}
  - {name: lstm, type: LSTM, num_output: 6, bidirectional: true, return_sequence: false}
  - {name: fc, type: InnerProduct, num_output: 3}
"""
    graph = build_graph(net_from_source(parse_yaml(text)))
    assert [n.out_blobs[0].shape for n in graph.nodes] == [(9, 8), (12,), (3,)]
    net = build_net(net_from_source(parse_yaml(text)))
    assert net(tokens=torch.randint(0, 20, (2, 9)), label=torch.zeros(2, dtype=torch.long))["fc"].shape == (2, 3)


def test_rnn_flops_count_gate_products():
    s = spec(type="LSTM", num_output=4, bias_term=False)
    # per step: 4 gates x 4 units x (3 inputs + 4 hidden) multiply-adds, plus 4 pointwise per unit
    assert s.flops([Blob((5, 3))], s.infer([Blob((5, 3))])) == 5 * (2 * 4 * 4 * 7 + 4 * 4)
    g = spec(type="GRU", num_output=4, bidirectional=True)
    assert g.flops([Blob((5, 3))], g.infer([Blob((5, 3))])) == 2 * 5 * (2 * 3 * 4 * 7 + 2 * 3 * 4 + 5 * 4)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_rnn_shape_errors_are_located(kind):
    msg = errors(net_text("{img: [3, 8, 8]}", f"{{name: rnn, type: {kind}, num_output: 4}}"), graph=True)
    assert "<string>:4:" in msg and f"{kind} layer 'rnn'" in msg and "(T, C) sequence" in msg and "[3, 8, 8]" in msg
    msg = errors(net_text("{seq: [8]}", f"{{name: rnn, type: {kind}, num_output: 4}}"), graph=True)
    assert "Reshape to (T, 1)" in msg
    msg = errors(net_text("{ids: {shape: [8, 2], dtype: int64}}", f"{{name: rnn, type: {kind}, num_output: 4}}"), graph=True)
    assert "floating-point input, got int64" in msg and "Embed" in msg


@pytest.mark.parametrize(("fields", "expect"), [
    ("num_output: 4, dropout: 0.3", "set num_layers >= 2"),
    ("num_output: 4, num_layers: 2, dropout: 1.0", "layers[0].dropout: input should be less than 1"),
    ("num_output: 4, num_layers: 0", "layers[0].num_layers: input should be greater than or equal to 1"),
    ("num_output: 0", "layers[0].num_output"),
    ("num_output: 4, return_sequences: false", "did you mean 'return_sequence'?"),
])
def test_rnn_validation(fields, expect):
    msg = errors(net_text("{seq: [6, 3]}", f"{{name: rnn, type: LSTM, {fields}}}"))
    assert expect in msg, msg
