"""``classes:`` (keep and relabel some labels) and ``per_class:`` (a balanced small subset) on data splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netcfg.data.sources import DIGITS_TRAIN
from netcfg.data.spec import DataSpec, source_spec
from netcfg.data.split import SplitData, load_source
from netcfg.errors import ConfigError
from netcfg.source import parse_yaml
from netcfg.spec import validate


def digits(**keys) -> SplitData:
    return load_source(source_spec(source="digits", split="train", batch_size=8, **keys))


def test_classes_keep_those_labels_relabelled_in_the_listed_order():
    everything = digits()
    subset = digits(classes=[7, 2])
    was = everything["label"]
    assert subset.num_samples == int((was == 7).sum() + (was == 2).sum())
    assert sorted(torch.unique(subset["label"]).tolist()) == [0, 1]
    # the images travel with their labels: the 7s come first in the listing, so they are 0
    sevens = everything["data"][was == 7]
    assert torch.equal(subset["data"][subset["label"] == 0], sevens)


def test_per_class_takes_the_first_n_of_each_class_in_file_order():
    subset = digits(classes=[3, 4, 5], per_class=10)
    assert torch.bincount(subset["label"]).tolist() == [10, 10, 10]
    everything = digits()
    first_threes = everything["data"][everything["label"] == 3][:10]
    assert torch.equal(subset["data"][subset["label"] == 0], first_threes)
    # without classes: every label, balanced; limit comes after it
    assert torch.bincount(digits(per_class=5)["label"]).tolist() == [5] * 10
    assert digits(per_class=5, limit=7).num_samples == 7


def test_per_class_is_at_most_n():
    few = digits(per_class=10_000)
    assert few.num_samples == DIGITS_TRAIN


def test_class_names_are_accepted_where_the_source_knows_them(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog", "owl"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4, 3), i * 40, np.uint8)).save(tmp_path / "train" / cls / f"{i}.png")
    split = load_source(source_spec(source="folder", path=str(tmp_path), split="train", batch_size=2,
                                    classes=["owl", "cat"]))
    assert split.classes["label"] == ["owl", "cat"]
    assert torch.bincount(split["label"]).tolist() == [3, 3]


def test_a_class_not_in_the_split_is_an_error_at_its_entry():
    with pytest.raises(ConfigError) as e:
        digits(classes=[3, 12])
    assert e.value.path == ("classes", 1)
    assert "label 12 is not in the train split of source 'digits'" in str(e.value)
    assert "its labels: 0..9" in str(e.value)
    with pytest.raises(ConfigError, match="class 'cat' is not in"):
        digits(classes=["cat"])


def test_a_split_without_labels_is_refused(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 3), np.float32))
    with pytest.raises(ConfigError, match="selects samples by their integer class label") as e:
        load_source(source_spec(source="npz", path=str(tmp_path / "x.npz"), arrays={"data": "x"}, split="train",
                                batch_size=2, per_class=2))
    assert e.value.path == ("per_class",)


def test_spec_errors_are_located():
    src = parse_yaml("train: {source: digits, split: train, batch_size: 8,\n"
                     "        classes: [1, 1], per_class: 0}\n", "d.yaml")
    with pytest.raises(Exception) as e:
        validate(DataSpec, src)
    text = e.value.render()
    assert "d.yaml:2:18: error: train.classes: classes lists 1 more than once" in text
    assert "train.per_class: input should be greater than or equal to 1" in text
