"""BatchLoader: coverage per epoch, determinism, resume, transforms, renaming, limit."""

from __future__ import annotations

import pytest
import torch

from netcfg.data.loader import BatchLoader
from netcfg.data.sources import load_source
from netcfg.data.spec import DataSourceSpec
from netcfg.errors import ConfigError


def dataset(n: int = 50, channels: int = 1) -> dict[str, torch.Tensor]:
    """Images whose pixels encode nothing in particular; labels are sample ids."""
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (n, channels, 3, 2), generator=g, dtype=torch.uint8)
    return {"data": data, "label": torch.arange(n)}


def loader(n: int = 50, seed: int = 7, channels: int = 1, **kw) -> BatchLoader:
    kw.setdefault("batch_size", 8)
    kw.setdefault("split", "train")
    return BatchLoader(dataset(n, channels), DataSourceSpec(source="digits", **kw), seed=seed)


def ids(batches) -> list[int]:
    return [i for b in batches for i in b["label"].tolist()]


def test_every_sample_once_per_epoch():
    ld = loader(n=50, batch_size=8)
    assert len(ld) == 7
    for epoch in range(3):
        seen = ids(ld.next_batch() for _ in range(len(ld)))
        assert sorted(seen) == list(range(50)), epoch
        assert ld.epoch == epoch and ld.epoch_float == epoch + 1


def test_orders_differ_between_epochs_and_seeds():
    a = loader(seed=1)
    first, second = ids(a.next_batch() for _ in range(7)), ids(a.next_batch() for _ in range(7))
    assert first != second and first != list(range(50))
    assert ids(loader(seed=2).next_batch() for _ in range(7)) != first


def test_same_seed_same_batches():
    a, b = loader(seed=3), loader(seed=3)
    for _ in range(20):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x["data"], y["data"]) and torch.equal(x["label"], y["label"])


@pytest.mark.parametrize("done", [0, 3, 7, 10, 14])  # start, mid-epoch, epoch boundaries
@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_gives_identical_batches(done, drop_last):
    a = loader(seed=5, drop_last=drop_last)
    for _ in range(done):
        a.next_batch()
    state = a.state_dict()
    assert all(type(v) is int for v in state.values())
    b = loader(seed=5, drop_last=drop_last)
    b.load_state_dict(state)
    assert b.epoch_float == a.epoch_float
    for _ in range(16):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x["label"], y["label"]) and torch.equal(x["data"], y["data"])


def test_load_state_dict_rejects_a_state_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        loader(n=50).load_state_dict({"epoch": 0, "position": 51})


def test_epoch_float_counts_fractions():
    ld = loader(n=40, batch_size=10)
    ld.next_batch()
    assert ld.epoch_float == 0.25
    for _ in range(4):
        ld.next_batch()
    assert ld.epoch_float == 1.25


def test_test_split_in_order_with_partial_last_batch():
    ld = loader(n=50, batch_size=8, split="test")
    batches = list(ld.epoch_batches())
    assert [len(b["label"]) for b in batches] == [8] * 6 + [2]
    assert ids(batches) == list(range(50))
    assert ids(ld) == list(range(50))  # iterating is one pass, and repeatable
    assert ld.state_dict() == {"epoch": 0, "position": 0}


def test_drop_last():
    ld = loader(n=50, batch_size=8, split="test", drop_last=True)
    assert len(ld) == 6
    assert [len(b["label"]) for b in ld.epoch_batches()] == [8] * 6
    train = loader(n=50, batch_size=8, drop_last=True)
    assert all(len(train.next_batch()["label"]) == 8 for _ in range(20))


def test_drop_last_with_batch_larger_than_data_is_an_error():
    with pytest.raises(ConfigError) as e:
        loader(n=5, batch_size=8, drop_last=True)
    assert e.value.path == ("batch_size",) and "larger than the 5 samples" in str(e.value)


def test_shuffled_epoch_batches_cover_everything():
    ld = loader(n=50, shuffle=True, split="test")
    assert sorted(ids(ld.epoch_batches())) == list(range(50))


@pytest.mark.parametrize("kw", [
    {},
    {"scale": 0.00390625},
    {"mean_value": 127.5, "scale": 0.5},
    {"mean_value": [10.0, 20.0, 30.0], "scale": 0.1, "std": [0.5, 2.0, 4.0]},
    {"mean_value": [5.0], "std": 3.0},
])
def test_transform_matches_caffe_order(kw):
    ld = loader(n=20, channels=3, split="test", batch_size=20, **kw)
    got = next(iter(ld))["data"]
    x = dataset(20, 3)["data"].double()
    mean = torch.tensor(kw.get("mean_value", 0.0), dtype=torch.float64).reshape(1, -1, 1, 1)
    std = torch.tensor(kw.get("std", 1.0), dtype=torch.float64).reshape(1, -1, 1, 1)
    want = (x - mean) * kw.get("scale", 1.0) / std
    assert got.dtype == torch.float32 and got.shape == (20, 3, 3, 2)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-5)


def test_batches_do_not_alias_the_dataset():
    ld = loader(n=10, batch_size=10, split="test")
    next(iter(ld))["data"].fill_(-1)
    assert next(iter(ld))["data"].min() >= 0


def test_inputs_renames_keys():
    ld = loader(inputs={"data": "image", "label": "target"})
    assert set(ld.next_batch()) == {"image", "target"}
    partial = loader(inputs={"label": "y"})
    assert set(partial.next_batch()) == {"data", "y"}


def test_limit_uses_first_samples():
    ld = loader(n=50, limit=12, batch_size=5)
    assert ld.num_samples == 12 and len(ld) == 3
    assert sorted(ids(ld.next_batch() for _ in range(3))) == list(range(12))


def test_digits_end_to_end():
    spec = DataSourceSpec(source="digits", split="train", batch_size=64, scale=0.00390625, limit=200)
    ld = BatchLoader(load_source(spec), spec, seed=0)
    b = ld.next_batch()
    assert b["data"].shape == (64, 1, 8, 8) and b["label"].dtype == torch.int64
    assert 0 <= b["data"].min() and b["data"].max() < 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    spec = DataSourceSpec(source="digits", split="train", batch_size=32, scale=0.00390625, mean_value=8.0)
    cpu = BatchLoader(load_source(spec), spec, seed=4)
    gpu = BatchLoader(load_source(spec), spec, seed=4, device="cuda")
    for _ in range(50):
        x, y = cpu.next_batch(), gpu.next_batch()
        assert y["data"].is_cuda and torch.equal(x["label"], y["label"].cpu())
        torch.testing.assert_close(x["data"], y["data"].cpu())


# ---------------------------------------------------------------- residency, pinned memory, ranks


def test_host_path_gives_the_same_batches():
    resident, host = loader(seed=6, pad=1, mirror=True), loader(seed=6, pad=1, mirror=True, device_resident=False)
    assert resident.resident and not host.resident
    for _ in range(10):
        x, y = resident.next_batch(), host.next_batch()
        assert torch.equal(x["data"], y["data"]) and torch.equal(x["label"], y["label"])
    assert ids(host.epoch_batches()) == ids(resident.epoch_batches())


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_share_each_epoch(world):
    ranks = [BatchLoader(dataset(50), DataSourceSpec(source="digits", split="train", batch_size=8), seed=4,
                         rank=r, world_size=world) for r in range(world)]
    per_rank = -(-50 // world)
    assert all(ld.num_samples == per_rank and len(ld) == -(-per_rank // 8) for ld in ranks)
    for epoch in range(2):
        seen = [ids(ld.next_batch() for _ in range(len(ld))) for ld in ranks]
        assert all(len(s) == per_rank for s in seen)
        flat = [i for s in seen for i in s]
        assert sorted(set(flat)) == list(range(50))            # every sample, once per epoch...
        assert len(flat) - len(set(flat)) == per_rank * world - 50  # ...plus the wrap-round padding
    single = loader(n=50, seed=4)
    perm = single.permutation(1).tolist()
    assert [i for pair in zip(*[ids(ld.epoch_batches()) for ld in ranks]) for i in pair][:50 - 50 % world] == \
        perm[:50 - 50 % world]  # rank r takes samples r, r + world, ... of the shared permutation


def test_ranks_augment_differently():
    kw = dict(split="train", batch_size=10, mirror=True, shuffle=False)
    a = BatchLoader(dataset(40), DataSourceSpec(source="digits", **kw), seed=4, rank=0, world_size=2)
    b = BatchLoader(dataset(40), DataSourceSpec(source="digits", **kw), seed=4, rank=1, world_size=2)
    flips_a = [torch.equal(x, y) for x, y in zip(a.next_batch()["data"], dataset(40)["data"][0::2].float())]
    flips_b = [torch.equal(x, y) for x, y in zip(b.next_batch()["data"], dataset(40)["data"][1::2].float())]
    assert flips_a != flips_b


def test_rank_out_of_range():
    with pytest.raises(ValueError, match="rank 2"):
        BatchLoader(dataset(10), DataSourceSpec(source="digits", split="train", batch_size=2), seed=0, rank=2, world_size=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("resident", [True, False])
def test_cuda_resident_and_pinned_match_cpu(resident):
    spec = DataSourceSpec(source="digits", split="train", batch_size=32, scale=0.00390625, pad=1, mirror=True,
                          crop_size=8, device_resident=resident)
    cpu = BatchLoader(load_source(spec), spec, seed=4)
    gpu = BatchLoader(load_source(spec), spec, seed=4, device="cuda")
    assert gpu.resident is resident
    for _ in range(60):
        x, y = cpu.next_batch(), gpu.next_batch()
        assert y["data"].is_cuda and torch.equal(x["label"], y["label"].cpu())
        torch.testing.assert_close(x["data"], y["data"].cpu())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_random_erasing_is_deterministic():
    spec = DataSourceSpec(source="digits", split="train", batch_size=64, random_erasing=0.5)
    a = BatchLoader(load_source(spec), spec, seed=4, device="cuda")
    b = BatchLoader(load_source(spec), spec, seed=4, device="cuda")
    for _ in range(5):
        assert torch.equal(a.next_batch()["data"], b.next_batch()["data"])

