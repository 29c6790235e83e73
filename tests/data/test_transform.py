"""Transforms: Caffe's order, mean files (.npy, binaryproto), crops, mirror, pad, random erasing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netcfg.data.augment import batch_generator, erase_boxes
from netcfg.data.loader import BatchLoader
from netcfg.data.meanfile import read_binaryproto, read_mean_file, write_binaryproto
from netcfg.data.spec import DataSpec, source_spec
from netcfg.data.split import SplitData
from netcfg.data.transform import ImageTransform
from netcfg.errors import ConfigError, NetcfgError
from netcfg.source import parse_yaml
from netcfg.spec import validate


def images(n: int = 16, c: int = 1, h: int = 6, w: int = 5) -> torch.Tensor:
    """Pixel value = 1 + its position in the image, so a crop and a flip are visible."""
    one = torch.arange(1, c * h * w + 1, dtype=torch.uint8).reshape(1, c, h, w)
    return one.repeat(n, 1, 1, 1)


def transform(shape=(16, 1, 6, 5), base_dir=None, **kw) -> ImageTransform:
    kw.setdefault("batch_size", 4)
    return ImageTransform.from_spec(source_spec(source="digits", split="train", **kw), shape, base_dir)


def gen(i: int = 0) -> torch.Generator:
    return batch_generator(1, 0, i)


# ---------------------------------------------------------------- crops, pad, mirror


def test_random_crop_is_a_window_of_the_image():
    x = images()
    out = transform(crop_size=3)(x, train=True, gen=gen())
    assert out.shape == (16, 1, 3, 3) and out.dtype == torch.float32
    windows = {tuple(x[0, 0, i:i + 3, j:j + 3].flatten().tolist()) for i in range(4) for j in range(3)}
    got = {tuple(o.flatten().int().tolist()) for o in out[:, 0]}
    assert got <= windows and len(got) > 1  # several different offsets, each a true window


def test_center_crop_in_testing():
    out = transform(crop_size=3)(images(2), train=False)
    torch.testing.assert_close(out[0, 0], images(1)[0, 0, 1:4, 1:4].float())


def test_center_crop_larger_than_the_image_takes_the_padding():
    # MNIST 28x28 padded to LeNet-5's 32x32: the test batch is the image framed in black,
    # the shape out_shape promised (it was the 2x2 slice x[..., -2:30, -2:30])
    t = transform(shape=(2, 1, 6, 5), pad=2, crop_size=8)
    out = t(images(2), train=False)
    assert out.shape == (2, 1, 8, 8) == (2,) + t.out_shape((1, 6, 5))
    torch.testing.assert_close(out[0, 0, 1:7, 2:7], images(1)[0, 0].float())
    assert out[0, 0, 0].abs().sum() == 0 and out[0, 0, 7].abs().sum() == 0 and out[0, 0, :, :2].abs().sum() == 0


def test_mirror_flips_about_half_of_the_images():
    x = images(200)
    out = transform(mirror=True)(x, train=True, gen=gen())
    same = (out == x.float()).flatten(1).all(1)
    flipped = (out == x.float().flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all()) and 60 < int(flipped.sum()) < 140


def test_pad_shifts_with_black_borders():
    x = torch.full((300, 1, 4, 4), 200, dtype=torch.uint8)
    out = transform(pad=1, scale=1 / 200)(x, train=True, gen=gen())
    assert out.shape == (300, 1, 4, 4)
    assert set(out.unique().tolist()) == {0.0, 1.0}  # raw zeros come in from the border
    zero_rows = (out == 0).all(-1).any(-1).float().mean()
    assert 0.2 < zero_rows < 0.8  # shifts up/down by one, or none


def test_crop_with_pad_covers_every_offset():
    x = images(400, h=4, w=4)
    out = transform(pad=1, crop_size=4)(x, train=True, gen=gen())
    # the top-left pixel of the window tells the offset: 9 offsets when padding by 1
    corners = {tuple(o[0, :2, :2].flatten().tolist()) for o in out}
    assert len(corners) == 9


def test_mean_image_is_cropped_with_the_batch():
    x = images(8)
    mean = x[0].float().numpy()  # subtracting the image from itself at the same offset gives 0
    t = ImageTransform(source_spec(source="digits", split="train", batch_size=4, crop_size=3, mirror=True),
                       torch.from_numpy(mean)[None], 1.0)
    assert t(x, train=True, gen=gen()).abs().max() == 0
    assert t(x, train=False).abs().max() == 0


def test_augmentation_is_a_function_of_seed_epoch_and_batch():
    t = transform(crop_size=4, pad=2, mirror=True, random_erasing=0.5)
    x = torch.randint(0, 256, (32, 3, 6, 5), dtype=torch.uint8)
    t3 = transform(shape=(32, 3, 6, 5), crop_size=4, pad=2, mirror=True, random_erasing=0.5)
    a, b = t3(x, train=True, gen=gen(0)), t3(x, train=True, gen=gen(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, t3(x, train=True, gen=gen(1)))
    assert t.augments and not transform().augments


# ---------------------------------------------------------------- random erasing


def test_erase_boxes_follow_the_paper():
    boxes = erase_boxes(4000, 32, 32, p=0.5, area=(0.02, 0.4), ratio=(0.3, 3.3), gen=gen())
    top, left, h, w = boxes.T
    erased = h > 0
    assert 0.45 < erased.mean() < 0.55
    frac = (h * w)[erased] / 1024
    assert frac.min() >= 0.015 and frac.max() <= 0.45  # rounding to whole pixels
    assert (top + h <= 32).all() and (left + w <= 32).all() and (top >= 0).all() and (left >= 0).all()
    ratio = h[erased] / w[erased]
    assert ratio.min() > 0.2 and ratio.max() < 4.5 and (ratio > 1).mean() > 0.3 and (ratio < 1).mean() > 0.3


@pytest.mark.parametrize("value", [0.0, "random"])
def test_random_erasing_replaces_one_rectangle(value):
    x = torch.full((200, 3, 16, 16), 100, dtype=torch.uint8)
    out = transform(shape=(200, 3, 16, 16), mean_value=100.0, random_erasing=1.0, erasing_value=value)(
        x, train=True, gen=gen())
    changed = (out != 0).any(1)  # (N, H, W): the input normalises to 0 everywhere
    if value == 0.0:
        assert not changed.any()
        return
    assert changed.flatten(1).any(1).float().mean() > 0.95
    for m in changed[:20]:
        rows, cols = m.any(1).nonzero().squeeze(1), m.any(0).nonzero().squeeze(1)
        box = m[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.float().mean() > 0.95  # one filled rectangle (noise may hit 0 exactly, rarely)
    assert 0.5 < out[out != 0].std() < 1.5  # standard normal noise


def test_random_erasing_only_in_training():
    x = torch.full((50, 1, 8, 8), 7, dtype=torch.uint8)
    assert torch.equal(transform(shape=(50, 1, 8, 8), random_erasing=1.0)(x, train=False), x.float())


# ---------------------------------------------------------------- mean files


def test_mean_file_npy_and_binaryproto_agree(tmp_path):
    mean = np.random.default_rng(0).random((3, 6, 5)).astype(np.float32) * 255
    np.save(tmp_path / "mean.npy", mean)
    (tmp_path / "mean.binaryproto").write_bytes(write_binaryproto(mean[None]))
    x = torch.randint(0, 256, (4, 3, 6, 5), dtype=torch.uint8)
    want = (x.float() - torch.from_numpy(mean)) * 0.5
    for name in ("mean.npy", "mean.binaryproto"):
        t = transform(shape=(4, 3, 6, 5), base_dir=tmp_path, mean_file=name, scale=0.5)
        torch.testing.assert_close(t(x, train=False), want)


def test_binaryproto_legacy_dimensions_and_unpacked_floats():
    # num/channels/height/width (fields 1-4) and one float per data field (wire type 5), as old Caffe wrote
    values = np.arange(6, dtype="<f4")
    raw = bytes([0x08, 1, 0x10, 1, 0x18, 2, 0x20, 3])
    raw += b"".join(bytes([0x2D]) + v.tobytes() for v in values)
    assert read_binaryproto(raw).tolist() == [[[[0, 1, 2], [3, 4, 5]]]]


def test_binaryproto_truncated_is_an_error(tmp_path):
    f = tmp_path / "mean.binaryproto"
    f.write_bytes(write_binaryproto(np.ones((1, 3, 4, 4), np.float32))[:-5])
    with pytest.raises(ConfigError) as e:
        read_mean_file(f)
    assert e.value.path == ("mean_file",) and "not a valid Caffe binaryproto" in str(e.value)


def test_mean_file_shape_must_fit(tmp_path):
    np.save(tmp_path / "mean.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ConfigError) as e:
        transform(shape=(4, 3, 6, 5), base_dir=tmp_path, mean_file="mean.npy")
    assert e.value.path == ("mean_file",) and "[3, 8, 8]" in str(e.value) and "[3, 6, 5]" in str(e.value)


def test_mean_file_per_channel_vector(tmp_path):
    np.save(tmp_path / "m.npy", np.array([1.0, 2.0, 3.0], np.float32))
    x = torch.zeros((2, 3, 4, 4), dtype=torch.uint8)
    out = transform(shape=(2, 3, 4, 4), base_dir=tmp_path, mean_file="m.npy")(x, train=False)
    assert out[:, :, 0, 0].tolist() == [[-1.0, -2.0, -3.0]] * 2


def test_mean_file_errors(tmp_path):
    (tmp_path / "m.txt").write_text("1")
    for name, words in (("nope.npy", "not found"), ("m.txt", "neither .npy nor .binaryproto")):
        with pytest.raises(ConfigError, match=words):
            transform(base_dir=tmp_path, mean_file=name)


def test_nan_or_inf_in_a_transform_is_refused_before_it_poisons_every_batch(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((3, 1, 1), np.nan, np.float32))
    with pytest.raises(ConfigError, match="holds 3 NaN or infinite value"):
        transform(base_dir=tmp_path, mean_file="nan.npy")
    for key, value in (("scale", float("nan")), ("mean_value", [float("inf")]), ("std", float("inf")),
                       ("erasing_value", float("nan"))):
        with pytest.raises(NetcfgError) as e:
            validate(DataSpec, parse_yaml(f"train: {{source: digits, split: train, batch_size: 4, {key}: "
                                          f"{str(value).replace('nan', '.nan').replace('inf', '.inf')}}}", "s.yaml"))
        assert "finite number" in e.value.render(), e.value.render()


def test_mean_value_and_mean_file_exclude_each_other():
    with pytest.raises(Exception, match="mean_value or mean_file"):
        source_spec(source="digits", split="train", batch_size=4, mean_value=1.0, mean_file="m.npy")


# ---------------------------------------------------------------- keys that do not fit


def test_transform_keys_on_a_source_without_images():
    spec = source_spec(source="digits", split="train", batch_size=4, scale=0.5)
    with pytest.raises(ConfigError) as e:
        SplitData.build(spec, {"x": np.zeros((4, 3), np.float32), "label": np.zeros(4, np.int64)})
    assert e.value.path == ("scale",) and "gives none" in str(e.value)


def test_invert_undoes_the_normalisation():
    t = transform(shape=(2, 3, 6, 5), mean_value=[10.0, 20.0, 30.0], scale=0.1, std=[0.5, 1.0, 2.0])
    x = torch.randint(0, 256, (2, 3, 6, 5), dtype=torch.uint8)
    torch.testing.assert_close(t.invert(t(x, train=False)), x.float(), atol=1e-4, rtol=0)


def test_loader_applies_the_transform_per_training_batch():
    spec = source_spec(source="digits", split="train", batch_size=8, crop_size=4, pad=1, mirror=True)
    data = {"data": torch.randint(0, 256, (40, 1, 6, 6), dtype=torch.uint8), "label": torch.arange(40)}
    a, b = BatchLoader(data, spec, seed=3), BatchLoader(data, spec, seed=3)
    for _ in range(12):
        x, y = a.next_batch(), b.next_batch()
        assert x["data"].shape == (8, 1, 4, 4) and torch.equal(x["data"], y["data"])
    test = BatchLoader(data, spec.model_copy(update={"split": "test", "shuffle": False}), seed=3)
    first = next(iter(test))["data"]
    torch.testing.assert_close(first, data["data"][:8, :, 1:5, 1:5].float())
