"""netcfg.source: YAML with positions, every refusal located, and ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from netcfg import source
from netcfg.errors import ConfigError, ConfigErrors
from netcfg.overrides import apply_overrides
from netcfg.source import load_yaml, parse_yaml

NET = """\
name: LeNet
inputs:
  data: [1, 28, 28]
layers:
  - name: conv1
    type: Convolution
    num_output: 20
  - {name: ip1, type: InnerProduct, num_output: 10}
"""


def errors_of(exc: pytest.ExceptionInfo) -> list[ConfigError]:
    e = exc.value
    return e.errors if isinstance(e, ConfigErrors) else [e]


def one_error(text: str) -> ConfigError:
    with pytest.raises((ConfigError, ConfigErrors)) as exc:
        parse_yaml(text, "net.yaml")
    (err,) = errors_of(exc)
    assert err.file == "net.yaml"
    return err


# ---------------------------------------------------------------- positions


def test_data_is_plain_python():
    src = parse_yaml(NET, "net.yaml")
    assert src.data["inputs"] == {"data": [1, 28, 28]}
    assert src.data["layers"][1] == {"name": "ip1", "type": "InnerProduct", "num_output": 10}


def test_positions_of_values_keys_and_list_items():
    src = parse_yaml(NET, "net.yaml")
    assert src.positions[("name",)] == (1, 7)
    assert src.positions[("inputs", "data")] == (3, 9)
    assert src.positions[("inputs", "data", 2)] == (3, 17)
    assert src.positions[("layers", 0)] == (5, 5)  # block item: where its mapping starts
    assert src.positions[("layers", 0, "num_output")] == (7, 17)
    assert src.positions[("layers", 1)] == (8, 5)  # flow item: its '{'
    assert src.positions[("layers", 1, "num_output")] == (8, 49)
    assert src.key_positions[("layers", 0, "num_output")] == (7, 5)
    assert src.key_positions[("layers", 1, "type")] == (8, 17)


def test_locate_uses_the_longest_known_prefix():
    src = parse_yaml(NET, "net.yaml")
    err = src.locate(ConfigError("bad", ("layers", 1, "num_output")))
    assert (err.file, err.line, err.col) == ("net.yaml", 8, 49)
    err = src.locate(ConfigError("missing", ("layers", 0, "kernel_size")))  # not in the file
    assert (err.line, err.col) == (5, 5)
    err = src.locate(ConfigError("unknown", ("layers", 0, "num_output")), at_key=True)
    assert (err.line, err.col) == (7, 5)
    assert err.render() == "net.yaml:7:5: error: layers[0].num_output: unknown"


def test_bom_is_ignored():
    assert parse_yaml("\ufeffname: x\n").data == {"name": "x"}


def test_merge_keys_let_own_keys_override():
    src = parse_yaml("base: &b {lr_mult: 1, decay_mult: 1}\n"
                     "w: {<<: *b, lr_mult: 2}\n"
                     "again: *b\n", "net.yaml")
    assert src.data["w"] == {"lr_mult": 2, "decay_mult": 1}
    assert src.data["again"] == {"lr_mult": 1, "decay_mult": 1}
    assert src.positions[("w", "lr_mult")] == (2, 22)


def test_merge_key_then_a_real_duplicate_is_refused():
    err = one_error("base: &b {a: 1}\nw: {<<: *b, a: 2, a: 3}\n")
    assert "duplicate key 'a'" in err.message and (err.line, err.col) == (2, 19)


# ---------------------------------------------------------------- refusals


def test_syntax_error_points_at_the_unclosed_bracket():
    err = one_error("name: x\nlayers:\n  - {name: a, type: ReLU\n  - {name: b, type: ReLU}\n")
    assert (err.line, err.col) == (4, 5)
    assert err.message.startswith("YAML syntax: ")
    assert "the '{' at line 3, column 5 is not closed" in err.message
    assert err.hint == "add the missing '}'"


@pytest.mark.parametrize("text, line, col, words", [
    ("name: x\nlayers:\n  - a\n b: 1\n", 4, 2, "bad indentation"),
    ("name: x\n layers: []\n", 2, 8, "unexpected ':'"),
    ("name: 'x\nlayers: []\n", 1, 7, "quote at line 1, column 7 is never closed"),
    ("name: x\nlayers\nfoo: 1\n", 2, 1, "no ':'"),
    ("a: b: c\n", 1, 5, "unexpected ':'"),
    ("a: 1\n---\nb: 2\n", 2, 1, "second YAML document"),
    ("a: *nowhere\n", 1, 4, "undefined alias 'nowhere'"),
])
def test_syntax_errors_are_located_and_worded(text, line, col, words):
    err = one_error(text)
    assert (err.line, err.col) == (line, col)
    assert words in err.message


def test_every_tab_in_indentation_is_reported():
    with pytest.raises(ConfigErrors) as exc:
        parse_yaml("name: x\ninputs:\n\tdata: [1]\n  \tlabel: []\nok: 'a\tb'\n", "net.yaml")
    errs = errors_of(exc)
    assert [(e.line, e.col) for e in errs] == [(3, 1), (4, 3)]
    assert all(e.message == "tab character in indentation" for e in errs)


def test_duplicate_key_names_the_path_and_the_first_one():
    err = one_error("layers:\n  - name: a\n    num_output: 1\n    num_output: 2\n")
    assert err.path == ("layers", 0, "num_output")
    assert (err.line, err.col) == (4, 5)
    assert "first defined at line 3, column 5" in err.message


def test_a_duplicate_inside_an_aliased_mapping_is_reported_once():
    err = one_error("a: &a {x: 1, x: 2}\nb: *a\nc: *a\n")
    assert (err.path, err.line, err.col) == (("a", "x"), 1, 14)


def test_duplicate_keys_are_all_reported():
    with pytest.raises(ConfigErrors) as exc:
        parse_yaml("a: 1\na: 2\nb: {c: 1, c: 2}\n", "net.yaml")
    assert [(e.path, e.line) for e in errors_of(exc)] == [(("a",), 2), (("b", "c"), 3)]


@pytest.mark.parametrize("value, shown", [
    ("!!python/object/apply:os.system [echo hi]", "!!python/object/apply:os.system"),
    ("!!python/name:os.system ''", "!!python/name:os.system"),
    ("!include other.yaml", "!include"),
    ("!!binary aGk=", "!!binary"),
    ("!!set {a, b}", "!!set"),
])
def test_non_standard_tags_are_refused(value, shown):
    err = one_error(f"name: x\nlayers:\n  - num_output: {value}\n")
    assert err.message == f"tag '{shown}' is not allowed"
    assert err.path == ("layers", 0, "num_output")
    assert (err.line, err.col) == (3, 17)


def test_standard_tags_are_read():
    assert parse_yaml("a: !!float 1\nb: !!str 2\n").data == {"a": 1.0, "b": "2"}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "   \n"])
def test_empty_file_is_refused(text):
    err = one_error(text)
    assert "file is empty" in err.message and (err.line, err.col) == (1, 1)


@pytest.mark.parametrize("text, found", [
    ("- a\n- b\n", "a list"),
    ("LeNet\n", "the scalar 'LeNet'"),
    ("\n\n42\n", "the scalar 42"),
])
def test_top_level_must_be_a_mapping(text, found):
    err = one_error(text)
    assert err.message == f"expected a mapping of keys at the top level, found {found}"
    assert err.line == text.count("\n", 0, len(text) - len(text.lstrip("\n"))) + 1


def test_bytes_that_are_not_utf8_are_located(tmp_path):
    f = tmp_path / "net.yaml"
    f.write_bytes(b"name: x\ninputs:\n  data: [1]  # caf\xe9\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(f)
    err = exc.value
    assert (err.file, err.line, err.col) == (str(f), 3, 19)
    assert err.message == "byte 0xe9 is not UTF-8 text"


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such file") as exc:
        load_yaml(tmp_path / "nope.yaml")
    assert exc.value.render() == f"{tmp_path / 'nope.yaml'}: error: no such file"
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml(tmp_path)


def test_alias_bomb_is_stopped(monkeypatch):
    monkeypatch.setattr(source, "_MAX_NODES", 10_000)  # the real guard is 1e6; same code path
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    err = one_error("\n".join(lines) + "\n")
    assert "more than 10,000 nodes" in err.message and "alias bomb" in err.hint


def test_aliases_below_the_guard_are_fine():
    src = parse_yaml("f: &f {type: xavier}\na: {weight_filler: *f}\nb: {weight_filler: *f}\n")
    assert src.data["b"]["weight_filler"] == {"type": "xavier"}


# ---------------------------------------------------------------- overrides


def overridden(*sets: str) -> source.Source:
    return apply_overrides(parse_yaml(NET, "net.yaml"), list(sets))


def test_override_nested_key_and_new_key():
    src = overridden("inputs.data=[3, 32, 32]", "inputs.label.dtype=int64", "name=Other")
    assert src.data["inputs"]["data"] == [3, 32, 32]
    assert src.data["inputs"]["label"] == {"dtype": "int64"}
    assert src.data["name"] == "Other"


def test_override_list_item_by_index_and_by_name():
    src = overridden("layers.0.num_output=64", "layers.ip1.num_output=5")
    assert src.data["layers"][0]["num_output"] == 64
    assert src.data["layers"][1]["num_output"] == 5
    # the path as an error prints it works too
    src = overridden("layers[0].num_output=32", "layers[ip1].num_output=6")
    assert (src.data["layers"][0]["num_output"], src.data["layers"][1]["num_output"]) == (32, 6)


def test_override_reaches_layers_with_dotted_and_odd_names():
    """An expanded template, and so every run's config.yaml of a templated net, names its layers
    stage2.block1.conv1: --set layers.stage2.block1.conv1.num_output=64 was 'no item 'stage2'
    in layers', and layers[stage2.block1.conv1] a bad key path."""
    net = NET.replace("name: conv1", "name: stage2.block1.conv1").replace("name: ip1", "name: fc/out-1")
    src = apply_overrides(parse_yaml(net, "net.yaml"), ["layers.stage2.block1.conv1.num_output=64",
                                                        "layers[fc/out-1].num_output=3"])
    assert [layer["num_output"] for layer in src.data["layers"]] == [64, 3]
    src = apply_overrides(parse_yaml(net, "net.yaml"), ["layers[stage2.block1.conv1].num_output=32"])
    assert src.data["layers"][0]["num_output"] == 32
    with pytest.raises(ConfigErrors) as exc:
        apply_overrides(parse_yaml(net, "net.yaml"), ["layers.stage2.block1.conv2.num_output=1"])
    (err,) = errors_of(exc)
    assert (err.message, err.hint) == ("no item 'stage2.block1.conv2' in layers",
                                       "did you mean 'stage2.block1.conv1'?; indices 0..1 or a name")


def test_one_override_given_as_a_string_is_one_override():
    """From Python, overrides="name=Other" (no list) was read letter by letter: 'n', 'a', ..."""
    from netcfg import load_net, load_solver

    root = Path(__file__).resolve().parents[1]
    assert load_net(root / "configs" / "lenet.yaml", overrides="name=Other").name == "Other"
    assert load_net(root / "configs" / "lenet.yaml", overrides=("name=Other",)).name == "Other"
    assert load_solver(root / "solvers" / "digits.yaml", overrides="max_iter=200").max_iter == 200


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.5", 0.5), ("true", True), ("null", None), ("", None), ("[1, 2]", [1, 2]),
    ("{type: xavier}", {"type": "xavier"}), ("hello world", "hello world"),
    ("a: b: c", "a: b: c"),  # not YAML on its own: kept as the string typed
])
def test_override_values_are_parsed_as_yaml(text, value):
    assert overridden(f"name={text}").data["name"] == value


@pytest.mark.parametrize("text, message", [
    ("!!python/name:os.system ''", "tag '!!python/name:os.system' is not allowed"),
    ("{a: 1, a: 2}", "duplicate key 'a'; first defined at line 1, column 5"),
])
def test_override_values_are_refused_like_file_values(text, message):
    with pytest.raises(ConfigErrors) as exc:
        overridden(f"name={text}")
    (err,) = errors_of(exc)
    assert (err.file, err.line, err.message) == (f"--set name={text}", None, message)


def test_override_errors_are_all_reported_and_named():
    with pytest.raises(ConfigErrors) as exc:
        overridden("no_equals", "a..b=1", "layers.conv9.num_output=1", "layers.7.type=ReLU", "name.sub=1")
    got = {e.file: (e.message, e.hint) for e in errors_of(exc)}
    assert got["--set no_equals"] == ("expected KEY=VALUE", "e.g. --set base_lr=0.01")
    assert got["--set a..b=1"][0] == "bad key path 'a..b'"
    assert got["--set layers.conv9.num_output=1"] == (
        "no item 'conv9' in layers", "did you mean 'conv1'?; indices 0..1 or a name")
    assert got["--set layers.7.type=ReLU"] == ("no item '7' in layers", "indices 0..1 or a name")
    assert got["--set name.sub=1"][0] == "'name' is a value ('LeNet'), not a mapping or list"
    assert all(e.line is None for e in errors_of(exc))


def test_errors_in_an_overridden_value_point_at_the_set():
    src = overridden("layers.ip1.num_output=0")
    err = src.locate(ConfigError("must be >= 1, got 0", ("layers", 1, "num_output")))
    assert err.render() == "--set layers.ip1.num_output=0: error: layers[1].num_output: must be >= 1, got 0"
    err = src.locate(ConfigError("bad", ("layers", 0, "num_output")))  # untouched: still the file
    assert err.where == "net.yaml:7:17"



def test_a_key_missing_under_a_new_key_of_a_set_points_at_the_set():
    src = overridden("extra.sub.leaf=1")
    err = src.locate(ConfigError("missing required key 'other'", ("extra", "sub")))
    assert err.where == "--set extra.sub.leaf=1"


def test_exponent_numbers_read_as_numbers_as_in_yaml_1_2():
    # PyYAML's YAML 1.1 rules read 5e-2 as a string, which the strict schemas refuse
    data = parse_yaml("a: [5e-2, 1E3, -1.5e-3, +2e+1, 1_000, .5, e3, 1e, '5e-2']").data
    assert data["a"] == [0.05, 1000.0, -0.0015, 20.0, 1000, 0.5, "e3", "1e", "5e-2"]


@pytest.mark.parametrize("text", ["1e3", "-2E-5", "null", "~", "yes", "Off", "0x10", "0o7", "1_000", ".inf",
                                  "2026-01-02", "12:30", "<<", "a: b", "- x", "#c", ""])
def test_to_yaml_quotes_every_string_the_loader_reads_as_something_else(text):
    data = {"name": text, "bottom": [text], text: {"top": text}}
    for flow in (False, True):
        assert parse_yaml(source.to_yaml(data, flow=flow)).data == data
