"""Source folder: class folders of image files, decoded once and cached, or streamed by worker processes."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netcfg.data import folder as folder_module
from netcfg.data.loader import BatchLoader
from netcfg.data.spec import source_spec
from netcfg.data.split import load_source
from netcfg.data import stream
from netcfg.data.stream import StreamedImages
from netcfg.errors import ConfigError

RNG = np.random.default_rng(0)


def make(root: Path, classes=("cat", "dog", "emu"), n: int = 4, size=(6, 5), mode: str = "RGB") -> dict[str, np.ndarray]:
    """Write n images per class; return {relative path: pixels (C, H, W)}."""
    out = {}
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = size + ((3,) if mode == "RGB" else ())
            pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(root / c / f"{i:02d}.png")
            out[f"{c}/{i:02d}.png"] = pixels.transpose(2, 0, 1) if mode == "RGB" else pixels[None]
    return out


def load(path: Path, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("split", "train")
    return load_source(source_spec(source="folder", path=str(path), **kw))


def test_train_and_test_folders(tmp_path):
    train = make(tmp_path / "train")
    test = make(tmp_path / "test", classes=("cat", "emu"), n=2)
    t = load(tmp_path)
    assert t["data"].shape == (12, 3, 6, 5) and t["data"].dtype == torch.uint8
    np.testing.assert_array_equal(t["data"].numpy(), np.stack(list(train.values())))
    assert t["label"].tolist() == [0] * 4 + [1] * 4 + [2] * 4 and t.classes["label"] == ["cat", "dog", "emu"]
    s = load(tmp_path, split="test")
    assert s["label"].tolist() == [0, 0, 2, 2]  # ids of the train classes
    np.testing.assert_array_equal(s["data"].numpy(), np.stack(list(test.values())))


def test_test_fraction_grayscale_and_resize(tmp_path):
    make(tmp_path, n=5, size=(10, 8), mode="L")
    train = load(tmp_path, test_fraction=0.2, channels=1)
    test = load(tmp_path, test_fraction=0.2, channels=1, split="test")
    assert len(train["label"]) == 12 and test["label"].tolist() == [0, 1, 2]  # the last file of each class
    small = load(tmp_path, test_fraction=0.2, channels=1, image_size=4)
    assert small.describe()["data"] == ((1, 4, 4), "float32")
    assert load(tmp_path, test_fraction=0.2, image_size=[3, 7]).describe()["data"] == ((3, 3, 7), "float32")


def test_cache_is_written_reused_and_invalidated(tmp_path, monkeypatch):
    make(tmp_path)
    first = load(tmp_path)
    caches = list((tmp_path / ".netcfg-cache").iterdir())
    assert len(caches) == 1 and caches[0].suffix == ".npz"

    def no_decoding(*a, **k):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folder_module, "decode_all", no_decoding)
    assert torch.equal(load(tmp_path)["data"], first["data"])
    monkeypatch.undo()
    f = tmp_path / "dog" / "01.png"
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(f)
    os.utime(f, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    again = load(tmp_path)
    assert again["data"][5].sum() == 0 and not torch.equal(again["data"], first["data"])
    assert len(list((tmp_path / ".netcfg-cache").iterdir())) == 1  # replaced, not piled up


def test_cache_elsewhere_when_the_data_is_read_only(tmp_path, monkeypatch):
    make(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(folder_module.os, "access", lambda p, mode: False)
    load(tmp_path / "data")
    assert not (tmp_path / "data" / ".netcfg-cache").exists()
    assert len(list((tmp_path / "xdg" / "netcfg" / "folder").glob("*/*.npz"))) == 1
    load(tmp_path / "data", cache_dir=str(tmp_path / "mine"))
    assert len(list((tmp_path / "mine").glob("*/*.npz"))) == 1


def test_streaming_gives_the_same_batches(tmp_path):
    make(tmp_path, n=6)
    memory = load(tmp_path, cache=False)
    streamed = load(tmp_path, memory_limit_mb=1e-4, workers=2)
    assert isinstance(streamed["data"], StreamedImages)
    assert streamed.describe() == memory.describe()
    spec = source_spec(source="folder", path=str(tmp_path), split="train", batch_size=5, mirror=True, pad=1)
    a, b = BatchLoader(memory, spec, seed=2), BatchLoader(streamed, spec, seed=2)
    for _ in range(9):  # across epoch boundaries (18 images, batches of 5)
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x["data"], y["data"]) and torch.equal(x["label"], y["label"])
    test = BatchLoader(streamed, spec.model_copy(update={"split": "test", "shuffle": False}), seed=2)
    assert torch.cat([t["label"] for t in test]).tolist() == memory["label"].tolist()


def test_streamed_decoding_error_names_the_file(tmp_path):
    make(tmp_path, n=2)
    (tmp_path / "dog" / "00.png").write_bytes(b"not a png")
    t = load(tmp_path, memory_limit_mb=1e-4, workers=1)
    with pytest.raises(ConfigError) as e:
        t["data"].take(torch.arange(6))
    assert e.value.file.endswith("dog/00.png") and "cannot decode" in e.value.message


def test_corrupt_image(tmp_path):
    make(tmp_path, n=2)
    (tmp_path / "emu" / "01.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ConfigError) as e:
        load(tmp_path)
    assert e.value.render().startswith(f"{tmp_path / 'emu' / '01.png'}: error: cannot decode the image")
    assert e.value.hint == "remove or replace the file"  # not image_size: resizing cannot mend a broken file
    assert not (tmp_path / ".netcfg-cache").exists()  # nothing half-written


def test_a_bad_image_is_named_when_the_error_points_at_the_solver(tmp_path):
    from tests.cli import netcfg

    make(tmp_path / "imgs", n=2)
    with open(tmp_path / "imgs" / "emu" / "01.png", "r+b") as f:  # Pillow's message does not name it
        f.truncate(60)
    (tmp_path / "net.yaml").write_text("name: n\ninputs: {data: [3, 6, 5], label: {shape: [], dtype: int64}}\n"
                                       "layers:\n  - {name: ip, type: InnerProduct, num_output: 3}\n"
                                       "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}\n")
    (tmp_path / "s.yaml").write_text("net: net.yaml\ndata:\n  train: {source: folder, path: imgs, split: train, "
                                     "batch_size: 2}\nbase_lr: 0.1\nmax_iter: 1\n")
    code, out, err = netcfg("check", tmp_path / "s.yaml")
    assert code == 2 and err.startswith(f"{tmp_path / 's.yaml'}:3:10: error: data.train: "
                                        f"{tmp_path / 'imgs' / 'emu' / '01.png'}: cannot decode the image"), err


def test_hidden_files_are_not_samples(tmp_path):
    pixels = make(tmp_path, n=2)
    # what a Mac leaves next to each image copied to a FAT/exFAT drive or zipped: not an image
    (tmp_path / "dog" / "._00.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "cat" / ".thumb.png").write_bytes(b"not a png")
    t = load(tmp_path, cache=False)
    np.testing.assert_array_equal(t["data"].numpy(), np.stack(list(pixels.values())))


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, channels):
    # a 16-bit PNG (microscopy, depth maps, medical scans) came out all 255: Pillow clips I;16 to L
    make(tmp_path, classes=("a",), n=1, mode="L")
    wide = (np.arange(30, dtype=np.uint16).reshape(6, 5) * 2000) + 1  # 1 .. 58001
    Image.fromarray(wide).save(tmp_path / "a" / "wide.png")
    assert Image.open(tmp_path / "a" / "wide.png").mode.startswith("I")
    data = load(tmp_path, channels=channels, cache=False)["data"][1]
    expected = np.rint(wide / 257).astype(np.uint8)
    for c in range(channels):
        np.testing.assert_array_equal(data[c].numpy(), expected)


def test_exif_rotated_photos_are_decoded_upright(tmp_path):
    # a phone stores a portrait photo landscape, with EXIF orientation 6 (turn 90 degrees clockwise)
    (tmp_path / "a").mkdir()
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[0, 0] = 255  # the stored top-left corner is the viewer's top-right
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "a" / "portrait.png", exif=exif)
    upright = np.zeros((6, 4, 3), np.uint8)
    upright[0, 3] = 255
    Image.fromarray(upright).save(tmp_path / "a" / "plain.png")
    for kw in ({}, {"memory_limit_mb": 1e-4, "workers": 1}):  # the first image's size sets the streamed shape
        t = load(tmp_path, cache=False, **kw)
        data = t["data"] if isinstance(t["data"], torch.Tensor) else t["data"].take(torch.arange(2))
        assert data.shape == (2, 3, 6, 4)
        np.testing.assert_array_equal(data[0].numpy(), data[1].numpy())


def test_test_fraction_on_train_and_test_folders_is_an_error(tmp_path):
    make(tmp_path / "train", n=2)
    make(tmp_path / "test", n=2)
    with pytest.raises(ConfigError) as e:  # it was silently unused
        load(tmp_path, test_fraction=0.5)
    assert e.value.path == ("test_fraction",) and "would hold out nothing" in e.value.message


def test_sizes_must_agree_without_image_size(tmp_path):
    make(tmp_path, n=2)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "emu" / "02.png")
    with pytest.raises(ConfigError) as e:
        load(tmp_path)
    assert "emu/02.png" in e.value.file and "9x9" in e.value.message and "image_size" in e.value.hint
    assert load(tmp_path, image_size=[6, 5])["data"].shape == (7, 3, 6, 5)


def test_an_image_too_large_for_pillow_is_named(tmp_path, monkeypatch):
    make(tmp_path, n=2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 6x5 = 30 pixels: over twice the limit, a "bomb"
    for kw in ({}, {"image_size": 4}):  # the first image's size is read, or every image decoded
        with pytest.raises(ConfigError) as e:
            load(tmp_path, cache=False, **kw)
        assert e.value.file.endswith("cat/00.png") and "decompression bomb" in e.value.message


@pytest.mark.parametrize("setup, kw, words", [
    (lambda p: p.mkdir(), {}, "no class sub-folders"),
    (lambda p: make(p), {"split": "test"}, "test_fraction"),
    (lambda p: (make(p / "train"), make(p / "test", classes=("cow",), n=1)), {"split": "test"}, "'cow'"),
    (lambda p: (p / "a").mkdir(parents=True), {}, "no image files"),
    (lambda p: (make(p), (p / "bat").mkdir()), {}, "class folder 'bat' of"),  # would be class 0, the rest shifted
    (lambda p: (make(p, n=2), (p / "dog" / "00.png").rename(p / "dog" / "00.txt"), (p / "dog" / "01.png").unlink()),
     {"test_fraction": 0.5, "split": "test"}, "holds no image files"),
    (lambda p: None, {}, "does not exist"),
])
def test_layout_errors(tmp_path, setup, kw, words):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(ConfigError) as e:
        load(root, **kw)
    assert e.value.path == ("path",) and words in str(e.value)


def test_without_pillow_the_error_says_what_to_install(tmp_path, monkeypatch):
    make(tmp_path, n=1)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    with pytest.raises(ConfigError) as e:
        load(tmp_path)
    assert "pip install 'netcfg[images]'" in str(e.value)


def _stopped_by_the_terminal() -> int:
    os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in a terminal sends the whole process group
    os.kill(os.getpid(), signal.SIGTERM)  # and a scheduler's stop
    return os.getpid()


@pytest.mark.skipif(sys.platform == "win32", reason="process-group signals are POSIX")
def test_decoding_workers_leave_ctrl_c_and_sigterm_to_the_training_process():
    # a worker killed by the group's Ctrl-C broke the pool: BrokenProcessPool traceback, no snapshot
    with stream._pool(1) as pool:
        try:
            worker = pool.submit(_stopped_by_the_terminal).result(timeout=60)
        except BaseException as e:  # the worker's KeyboardInterrupt comes back as the result: not pytest's own
            pytest.fail(f"a decoding worker was stopped by the signal: {e!r}")
        assert worker != os.getpid()


def test_images_in_a_class_folders_sub_folders_are_samples(tmp_path):
    # cat/2019/1.jpg is a cat, as torchvision's ImageFolder and Keras read it; such images were silently left out
    pixels = make(tmp_path, classes=("cat", "dog"), n=2)
    nested = make(tmp_path / "dog" / "2019", classes=("puppies",), n=1)
    (tmp_path / "cat" / ".Trash").mkdir()
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(tmp_path / "cat" / ".Trash" / "old.png")
    os.symlink(tmp_path / "dog", tmp_path / "dog" / "2019" / "loop")  # a link back up is read once
    t = load(tmp_path, cache=False)
    expected = [pixels["cat/00.png"], pixels["cat/01.png"], pixels["dog/00.png"], pixels["dog/01.png"],
                nested["puppies/00.png"]]  # dog/2019/puppies/00.png, in path order
    np.testing.assert_array_equal(t["data"].numpy(), np.stack(expected))
    assert t["label"].tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("mode, pixels", [("F", np.linspace(0, 1, 30, dtype=np.float32)),
                                          ("I", np.arange(30, dtype=np.int32) * 70000)])
def test_32_bit_and_float_images_are_refused_not_clipped(tmp_path, mode, pixels):
    # a float TIFF in 0..1 (a depth map) decoded all 0 and 1, a 32-bit one all 255: Pillow's convert clips
    make(tmp_path, classes=("a",), n=1)
    Image.fromarray(pixels.reshape(6, 5), mode).save(tmp_path / "a" / "deep.tif")
    assert Image.open(tmp_path / "a" / "deep.tif").mode == mode
    for kw in ({}, {"memory_limit_mb": 1e-4, "workers": 1}):
        with pytest.raises(ConfigError) as e:
            t = load(tmp_path, cache=False, **kw)
            t["data"].take(torch.arange(2))  # streamed: decoded when a batch asks
        assert e.value.file == str(tmp_path / "a" / "deep.tif")
        assert f"(Pillow mode {mode})" in e.value.message and "convert the images to 8-bit or 16-bit" in e.value.hint
