"""State files: exact round trips, bit-identical resumed training, atomic writes, bad files."""

import io
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from netcfg.errors import NetcfgError
from netcfg.solver.checkpoint import CheckpointError, atomic_write_bytes, load_tree, save_tree
from netcfg.solver.optim import OPTIMIZERS, make_optimizer, set_learning_rate

REPO = Path(__file__).resolve().parents[2]


def assert_same(a, b, where="tree"):
    """Equal values of equal types all the way down (NaN equals NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and b.device.type == "cpu", where
        assert torch.equal(a, b), where
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b and repr(a) == repr(b), where  # repr tells -0.0 from 0.0


def round_trip(tmp_path, tree, **kw):
    path = tmp_path / "state.safetensors"
    save_tree(path, tree, **kw)
    return load_tree(path)


def test_every_kind_of_value_round_trips_exactly(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    tree = {
        "scalars": [0, -7, 2**130, 1.5, -0.0, math.inf, -math.inf, math.nan,
                    True, None, "ü", b"\x00\xff"],
        "tuple": (1, (2, [3]), ()),
        "int_keys": {0: "a", 1: {"nested": 2}},
        "mixed_keys": {0: "int", "0": "str"},
        "$dollar": {"$tensor": "not a tag"},
        "empty": [{}, [], ()],
        "tensors": {
            "0d": torch.tensor(3.0),
            "empty": torch.zeros(0, 4),
            "half": torch.randn(3, dtype=torch.float16),
            "bf16": torch.randn(3, dtype=torch.bfloat16),
            "long": torch.arange(5),
            "bool": torch.tensor([True, False]),
            "bytes": torch.tensor([1, 255], dtype=torch.uint8),
            "transposed": torch.randn(3, 4).t(),
            "view_a": base[:6],  # two views of one storage
            "view_b": base[6:].view(2, 3),
            "again": base,
        },
        "arrays": [np.arange(6, dtype=np.int16).reshape(2, 3), np.asfortranarray(np.eye(3)),
                   np.array(2.5), np.float32(1.25), np.uint32(7), np.array([True])],
        "a.b": torch.ones(1),
        "a": {"b": torch.zeros(1)},  # the same path text as "a.b"
    }
    loaded, metadata = round_trip(tmp_path, tree, metadata={"netcfg.version": "0.1.0"})
    assert_same(tree, loaded)
    assert metadata == {"netcfg.version": "0.1.0"}


def test_loaded_tensors_are_plain_independent_and_writable(tmp_path):
    loaded, _ = round_trip(tmp_path, {"w": torch.nn.Parameter(torch.ones(3))})
    w = loaded["w"]
    assert type(w) is torch.Tensor and not w.requires_grad
    w.add_(1)  # no error: the tensor owns its memory
    assert load_tree(tmp_path / "state.safetensors")[0]["w"].tolist() == [1.0, 1.0, 1.0]


def test_unstorable_values_are_refused_before_writing(tmp_path):
    path = tmp_path / "state.safetensors"
    for bad in [{"x": {1, 2}}, {1.5: "float key"}, {"x": object()}, {"x": np.array(["s"])}]:
        with pytest.raises(TypeError):
            save_tree(path, bad)
    assert not path.exists()
    with pytest.raises(ValueError, match="reserved"):
        save_tree(path, {}, metadata={"netcfg.tree": "{}"})


def train(model, opt, batches):
    for i, (x, y) in enumerate(batches):
        set_learning_rate(opt, 0.05 / (1 + i))  # a changing rate, as a schedule gives
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def make(type, seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    groups = [
        {"params": [m.weight for m in model[::2]], "names": ["0.weight", "2.weight"],
         "lr_mult": 1.0, "decay_mult": 1.0},
        {"params": [m.bias for m in model[::2]], "names": ["0.bias", "2.bias"],
         "lr_mult": 2.0, "decay_mult": 0.0},
    ]
    return model, make_optimizer(type, groups, base_lr=0.05, momentum=0.9, weight_decay=1e-3)


@pytest.mark.parametrize("type", sorted(OPTIMIZERS))
def test_resumed_training_is_bit_identical(tmp_path, type):
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 4, generator=gen), torch.randn(16, 2, generator=gen))
               for _ in range(6)]
    model, opt = make(type, seed=1)
    train(model, opt, batches[:3])
    path = tmp_path / "snapshot.solverstate"
    save_tree(path, {"iter": 3, "model": model.state_dict(), "optimizer": opt.state_dict()})
    train(model, opt, batches[3:])

    resumed, resumed_opt = make(type, seed=2)  # different weights until loaded
    state, _ = load_tree(path)
    assert all(isinstance(k, int) for k in state["optimizer"]["state"])
    groups = state["optimizer"]["param_groups"]
    assert [(g["lr_mult"], g["param_names"]) for g in groups] == [
        (1.0, ["0.weight", "2.weight"]), (2.0, ["0.bias", "2.bias"])]
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["optimizer"])
    train(resumed, resumed_opt, batches[3:])

    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert_same(opt.state_dict(), resumed_opt.state_dict())


def test_optimizer_state_dict_round_trips_as_is(tmp_path):
    model, opt = make("Adam", seed=0)
    train(model, opt, [(torch.randn(2, 4), torch.randn(2, 2))])
    state = opt.state_dict()
    assert isinstance(state["state"][0]["step"], torch.Tensor)  # Adam's 0-d step tensors
    assert_same(state, round_trip(tmp_path, state)[0])


def test_rng_states_round_trip_and_replay_the_same_numbers(tmp_path):
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(4)
    rng = np.random.default_rng(5)
    np.random.seed(6)
    random.seed(7)
    states = {
        "torch": torch.get_rng_state(),
        "generator": gen.get_state(),
        "numpy": rng.bit_generator.state,  # holds 128-bit ints
        "numpy_legacy": np.random.get_state(),
        "python": random.getstate(),
    }
    draws = (torch.rand(3), torch.rand(3, generator=gen), rng.random(3),
             np.random.rand(3), random.random())
    loaded, _ = round_trip(tmp_path, states)
    assert_same(states, loaded)

    torch.set_rng_state(loaded["torch"])
    gen.set_state(loaded["generator"])
    rng.bit_generator.state = loaded["numpy"]
    np.random.set_state(loaded["numpy_legacy"])
    random.setstate(loaded["python"])
    again = (torch.rand(3), torch.rand(3, generator=gen), rng.random(3),
             np.random.rand(3), random.random())
    assert_same(draws, again)


def test_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old contents")
    atomic_write_bytes(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.safetensors"
    save_tree(path, {"w": torch.ones(2)})
    old = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_tree(path, {"w": torch.zeros(2)})
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["state.safetensors"]


def test_crash_before_the_rename_leaves_the_old_file(tmp_path):
    path = tmp_path / "state.safetensors"
    save_tree(path, {"w": torch.ones(2)})
    # a process that dies at the worst moment: new bytes written, not yet renamed
    script = (
        "import os, sys, torch\n"
        "from netcfg.solver.checkpoint import save_tree\n"
        "os.replace = lambda *a: os._exit(3)\n"
        "save_tree(sys.argv[1], {'w': torch.zeros(2)})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script, str(path)], env=env)
    assert result.returncode == 3
    assert load_tree(path)[0]["w"].tolist() == [1.0, 1.0]
    assert any(name.startswith("state.safetensors.tmp-") for name in os.listdir(tmp_path))


def foreign_files():
    meta = {"netcfg.format": "1", "netcfg.tree": '{"x":{"$tensor":"x"}}'}
    good = safetensors.torch.save({"x": torch.ones(2)}, metadata=meta)
    pickled = io.BytesIO()
    torch.save({"x": torch.ones(2)}, pickled)

    def netcfg(tree_json, tensors=None, fmt="1"):
        meta = {"netcfg.format": fmt, "netcfg.tree": tree_json}
        return safetensors.torch.save(tensors or {}, metadata=meta)

    return {
        "empty": (b"", "not a safetensors file"),
        "truncated": (good[:-3], "not a safetensors file"),
        "appended": (good + b"\0", "not a safetensors file"),
        "random": (np.random.default_rng(0).bytes(4096), "not a safetensors file"),
        "pickle": (pickled.getvalue(), "not a safetensors file"),
        "plain safetensors": (safetensors.torch.save({"x": torch.ones(1)}),
                              "not a netcfg state file"),
        "newer format": (netcfg("{}", fmt="99"), "unsupported netcfg state format '99'"),
        "bad json": (netcfg("{not json"), "corrupt state tree"),
        "missing tensor": (netcfg('{"$tensor":"y"}'), "corrupt state tree"),
        "unknown tag": (netcfg('{"$set":[1]}'), "corrupt state tree"),
        "bad dict": (netcfg('{"$dict":[[1.5, 2]]}'), "corrupt state tree"),
        "extra tensor": (netcfg("{}", {"x": torch.ones(1)}), "tensors not in the state tree: x"),
    }


@pytest.mark.parametrize("kind", sorted(foreign_files()))
def test_bad_files_are_refused_naming_the_file(tmp_path, kind):
    data, message = foreign_files()[kind]
    path = tmp_path / "snap.solverstate"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=message) as info:
        load_tree(path)
    assert isinstance(info.value, NetcfgError)
    assert str(path) in info.value.render()


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        load_tree(tmp_path / "nope.safetensors")
