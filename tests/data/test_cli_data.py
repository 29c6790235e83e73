"""``netcfg data stats`` and ``netcfg data show``: output to paste, a picture of a batch, exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from netcfg.data.sources import DIGITS_TRAIN, _digits
from netcfg.data.spec import source_spec
from netcfg.data.split import load_source
from netcfg.data.transform import ImageTransform
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "solvers" / "digits.yaml")


def test_stats_prints_values_ready_to_paste(tmp_path):
    result = run_cli("data", "stats", DIGITS, "--mean-file", str(tmp_path / "mean.npy"))
    assert result.exit_code == 0, result.stderr
    keys = yaml.safe_load(result.stdout)  # the comments fall away: it is YAML to paste
    x = _digits()[0][:DIGITS_TRAIN].astype(np.float64)
    assert keys["mean_value"] == [pytest.approx(x.mean(), rel=1e-5)]
    assert keys["std"] == [pytest.approx(x.std() / 256, rel=1e-5)]  # in units after scale 1/256
    assert "1,437 images of 1x8x8" in result.stdout and "after scale 0.00390625" in result.stdout
    mean = np.load(tmp_path / "mean.npy")
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5)
    # np.save would add .npy to another name, and a missing folder was a traceback
    result = run_cli("data", "stats", DIGITS, "--mean-file", str(tmp_path / "mean.txt"))
    assert result.exit_code == 2 and "write a .npy or a .binaryproto" in result.stderr
    result = run_cli("data", "stats", DIGITS, "--mean-file", str(tmp_path / "new" / "mean.npy"))
    assert result.exit_code == 0 and (tmp_path / "new" / "mean.npy").is_file()
    (tmp_path / "taken.npy").mkdir()
    result = run_cli("data", "stats", DIGITS, "--mean-file", str(tmp_path / "taken.npy"))
    assert result.exit_code == 2 and "--mean-file: error: cannot write" in result.stderr


def test_pasted_statistics_normalise_the_split(tmp_path):
    result = run_cli("data", "stats", DIGITS)
    keys = yaml.safe_load(result.stdout)
    spec = source_spec(source="digits", split="train", batch_size=8, scale=0.00390625, **keys)
    data = load_source(spec)
    x = data.transforms["data"](data["data"], train=False)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


@pytest.mark.parametrize("wrap", ["none", "of", "multi"])
def test_stats_say_where_to_paste_for_an_npz_source(tmp_path, wrap):
    # an npz tensor comes from arrays.data; the keys go on the mapping that transforms it
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y=np.arange(40) % 10)
    npz = {"source": "npz", "path": "d.npz", "arrays": {"data": "x", "label": "y"}, "scale": 0.00390625}
    split = {"none": {**npz, "split": "train", "batch_size": 8},
             "of": {"source": "image_features", "split": "train", "batch_size": 8, "of": npz},
             "multi": {"source": "multi", "split": "train", "batch_size": 8, "sources": [npz]}}[wrap]
    solver = {"net": str(ROOT / "configs" / "digits_cnn.yaml"), "data": {"train": split}, "base_lr": 0.1, "max_iter": 1}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(solver))
    result = run_cli("data", "stats", str(tmp_path / "s.yaml"))
    assert result.exit_code == 0, result.stderr
    where = {"none": "data.train", "of": "data.train.of", "multi": "data.train.sources[0]"}[wrap]
    assert f"# Paste under {where};" in result.stdout
    owner = {"none": split, "of": split.get("of"), "multi": split.get("sources", [None])[0]}[wrap]
    owner.update(yaml.safe_load(result.stdout))  # pasted where it says: the solver still checks
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(solver))
    result = run_cli("check", str(tmp_path / "s.yaml"))
    assert result.exit_code == 0, result.stderr


def test_stats_of_a_source_without_images(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n3,5,1\n")
    solver = tmp_path / "s.yaml"
    solver.write_text(yaml.safe_dump({
        "net": {"name": "n", "inputs": {"x": [2]}, "layers": [{"name": "ip", "type": "InnerProduct", "bottom": "x", "num_output": 1}]},
        "data": {"train": {"source": "csv", "path": "t.csv", "split": "train", "batch_size": 2,
                           "columns": {"x": ["a", "b"]}, "label": "y"}},
        "base_lr": 0.1, "max_iter": 1}))
    result = run_cli("data", "stats", str(solver))
    assert result.exit_code == 0, result.stderr
    assert "no image tensors" in result.stdout and "'x': 2 features" in result.stdout


def test_show_writes_a_grid_with_labels(tmp_path):
    out = tmp_path / "batch.png"
    result = run_cli("data", "show", DIGITS, "-o", str(out), "--set", "data.train.mirror=true")
    assert result.exit_code == 0, result.stderr
    assert "wrote" in result.stdout and "32 of 32 samples" in result.stdout
    with Image.open(out) as im:
        assert im.width > 6 * 64 and im.height > 6 * 64  # 32 tiles, each enlarged to at least 64 pixels
        pixels = np.asarray(im.convert("L"))
    assert pixels.min() < 30 and pixels.max() > 225  # dark digit backgrounds, white page and strokes


def test_show_output_is_checked_before_the_data_and_its_folder_made(tmp_path, monkeypatch):
    # -o in a folder not made yet was "error: cannot write the picture: [Errno 2] No such file or
    # directory" (every other -o makes it), a folder or .txt "unknown file extension", all after the data loaded
    from netcfg.cli import data as data_cli

    out = tmp_path / "new folder" / "batch.png"
    result = run_cli("data", "show", DIGITS, "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert Image.open(out).size[0] > 64
    monkeypatch.setattr(data_cli, "_load", lambda *a: pytest.fail("the data loaded before -o was checked"))
    for bad in (tmp_path, tmp_path / "batch.txt"):
        result = run_cli("data", "show", DIGITS, "-o", str(bad))
        assert (result.exit_code, result.stderr) == (2, f"--output: error: cannot write '{bad}': use a .png or .jpg "
                                                        "file (a picture format Pillow writes)\n")
    (tmp_path / "afile").write_text("mine")
    result = run_cli("data", "show", DIGITS, "-o", str(tmp_path / "afile" / "batch.png"))
    assert result.exit_code == 2 and result.stderr.startswith(f"--output: error: cannot write {tmp_path / 'afile'}")


def test_a_failed_show_leaves_no_folder_behind(tmp_path):
    # -o DIR/x.png made DIR before the data loaded, so a data error (or a batch past the epoch) left
    # an empty DIR: a command that fails changes nothing on disk
    out = tmp_path / "pics" / "new" / "batch.png"
    for args, words in ((["--set", "data.train.source=digitz"], "did you mean 'digits'"),
                        (["--batch", "1000"], "batches per epoch")):
        result = run_cli("data", "show", DIGITS, "-o", str(out), *args)
        assert result.exit_code == 2 and words in result.stderr, result.stderr
        assert list(tmp_path.iterdir()) == []
    result = run_cli("data", "show", DIGITS, "-o", str(out))
    assert result.exit_code == 0 and out.is_file(), result.stderr


def test_a_failed_write_takes_back_the_folders_it_made(tmp_path):
    from netcfg.cli.output import writing
    from netcfg.errors import ConfigError

    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="cannot write .*: No space left on device"):
        with writing(tmp_path / "mine" / "a" / "b" / "x.png"):
            raise OSError(28, "No space left on device")
    assert [p.name for p in tmp_path.rglob("*")] == ["mine"]  # the folder that was there stays


def test_show_test_split_and_class_names(tmp_path):
    for c in ("ant", "bee"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    solver = tmp_path / "s.yaml"
    solver.write_text(yaml.safe_dump({
        "net": {"name": "n", "inputs": {"data": [3, 4, 4]}, "layers": [{"name": "ip", "type": "InnerProduct", "num_output": 2}]},
        "data": {"train": {"source": "folder", "path": "imgs", "split": "train", "batch_size": 4, "test_fraction": 0.34},
                 "test": {"source": "folder", "path": "imgs", "split": "test", "batch_size": 4, "test_fraction": 0.34}},
        "base_lr": 0.1, "max_iter": 1}))
    result = run_cli("data", "show", str(solver), "--split", "test", "-o", str(tmp_path / "t.png"))
    assert result.exit_code == 0, result.stderr
    assert "2 of 2 samples" in result.stdout
    assert Image.open(tmp_path / "t.png").size[0] >= 2 * 64


def test_captions_use_class_names():
    import torch

    from netcfg.data.grid import sample_captions

    batch = {"data": torch.zeros(2, 1, 2, 2), "label": torch.tensor([1, 0]), "price": torch.tensor([[2.5], [1.0]])}
    assert sample_captions(batch, {"label": ["ant", "bee"]}, {"data"}) == ["bee 2.5", "ant 1"]


@pytest.mark.parametrize("args, words", [
    (["--split", "val"], "--split must be train or test"),
    (["--set", "data.train.source=digitz"], "did you mean 'digits'"),
])
def test_errors_exit_2(args, words):
    result = run_cli("data", "stats", DIGITS, *args)
    assert result.exit_code == 2 and words in result.stderr and "Traceback" not in result.stderr


def test_show_of_a_missing_split(tmp_path):
    solver = tmp_path / "s.yaml"
    solver.write_text(yaml.safe_dump({"net": str(ROOT / "configs" / "digits_cnn.yaml"),
                                      "data": {"train": {"source": "digits", "split": "train", "batch_size": 4}},
                                      "base_lr": 0.1, "max_iter": 1}))
    result = run_cli("data", "show", str(solver), "--split", "test")
    assert result.exit_code == 2 and "no test data" in result.stderr and "s.yaml:" in result.stderr


def test_invert_of_a_grid_matches_the_raw_pixels():
    spec = source_spec(source="digits", split="test", batch_size=8, scale=0.00390625, mean_value=30.0)
    data = load_source(spec)
    t: ImageTransform = data.transforms["data"]
    x = data["data"][:8]
    np.testing.assert_allclose(t.invert(t(x, train=False)).numpy(), x.float().numpy(), atol=1e-3)


def test_data_command_is_listed():
    result = run_cli("--help")
    assert "data" in result.stdout
    sub = run_cli("data", "--help")
    assert "stats" in sub.stdout and "show" in sub.stdout
