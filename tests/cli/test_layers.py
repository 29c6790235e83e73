"""``netcfg layers``: the registered types, one type's fields, did-you-mean on a typo."""

from __future__ import annotations

from pathlib import Path

from netcfg.layers._registry import registry
from tests.cli import run_cli


def test_lists_every_registered_type():
    result = run_cli("layers")
    assert result.exit_code == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines()[:-2] if line.strip()}
    assert listed == set(registry())
    assert f"{len(registry())} layer types" in result.stdout


def test_one_type_shows_its_fields():
    result = run_cli("layers", "Convolution")
    assert result.exit_code == 0, result.stderr
    fields = {line.split()[0] for line in result.stdout.splitlines()[2:] if line.strip()}
    assert {"num_output", "kernel_size", "stride", "pad", "weight_filler", "bottom", "param"} <= fields
    row = next(line for line in result.stdout.splitlines() if line.startswith("num_output"))
    assert "required" in row and "number of output channels" in row


def test_one_type_shows_how_it_deviates_from_caffe():
    """A docstring's later paragraphs say where the type differs from Caffe's layer of that
    name; `netcfg layers TYPE` and docs/layers.md show them, not only the summary."""
    result = run_cli("layers", "Pooling")
    assert result.exit_code == 0, result.stderr
    head = result.stdout.split("\nfield ")[0]
    assert head.startswith("Pooling: Max or average pooling")
    assert "Deviation from Caffe: a last window that would lie wholly outside the input" in head
    docs = (Path(__file__).parents[2] / "docs" / "layers.md").read_text()
    for layer, words in [("Pooling", "Deviation from Caffe: a last window"), ("BatchNorm", "Differences from Caffe"),
                         ("LRN", "Caffe's WITHIN_CHANNEL ignores k"), ("Scale", "Caffe's default is always 1")]:
        section = docs.split(f"\n## {layer}\n")[1].split("\n## ")[0]
        assert words in section, layer


def test_typo_exits_2_with_did_you_mean():
    result = run_cli("layers", "Convolutoin")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == ("netcfg layers: error: unknown layer type 'Convolutoin' "
                             "(did you mean 'Convolution'?)\n")


def test_case_slip_suggests_the_same_name_not_a_closer_looking_one():
    """'convolution' is 'Convolution' in the wrong case; difflib alone would offer
    'Deconvolution', whose letters match more of it."""
    result = run_cli("layers", "convolution")
    assert result.exit_code == 2
    assert "did you mean 'Convolution'?" in result.stderr
