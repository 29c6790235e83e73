"""The protobuf text-format parser and the schema decoding: values, positions, located errors."""

from __future__ import annotations

import math

import pytest

from netcfg.caffe.parser import Message, Scalar, parse_file, parse_text
from netcfg.caffe.proto import decode
from netcfg.errors import ConfigError


def scalars(msg: Message) -> dict:
    return {f.name: f.value.value for f in msg.fields if isinstance(f.value, Scalar)}


def error(text: str, type_name: str | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        msg = parse_text(text, "net.prototxt")
        if type_name:
            decode(msg, type_name, "net.prototxt")
    return info.value


def test_values_of_every_kind():
    msg = parse_text('a: 5 b: -3 c: 0x1F d: 1e-6 e: 2.5f f: .5 g: -inf h: nan i: TRAIN j: true '
                     "k: 'it\\'s' l: \"tab\\there\" m: \"ab\" 'cd' n: \"\\101\\x42\\u00e9\" o: 017")
    v = scalars(msg)
    assert (v["a"], v["b"], v["c"], v["d"], v["e"], v["f"]) == (5, -3, 31, 1e-6, 2.5, 0.5)
    assert v["g"] == -math.inf and v["h"] == "nan"  # an identifier until a float field reads it
    assert (v["i"], v["j"]) == ("TRAIN", "true")
    assert (v["k"], v["l"], v["m"], v["n"], v["o"]) == ("it's", "tab\there", "abcd", "ABé", 15)
    kinds = {f.name: f.value.kind for f in msg.fields}
    assert (kinds["a"], kinds["i"], kinds["k"]) == ("number", "ident", "string")


def test_messages_repeated_fields_lists_comments_and_separators():
    msg = parse_text("""
        # a comment
        layer { name: "a"  top: "x" top: "y" }   # trailing comment
        layer: < name: "b"; dim: [1, 2, 3], >
        shape { dim: [] }
    """)
    first, second, shape = msg.fields
    assert (first.name, second.name, shape.name) == ("layer", "layer", "shape")
    assert [f.value.value for f in first.value.fields] == ["a", "x", "y"]
    assert [f.value.value for f in second.value.fields] == ["b", 1, 2, 3]
    assert shape.value.fields == []


def test_every_field_keeps_its_line_and_column():
    msg = parse_text('name: "n"\nlayer {\n  type: "ReLU"\n    bottom: "x"\n}\n')
    name, layer = msg.fields
    assert (name.line, name.col, name.value.line, name.value.col) == (1, 1, 1, 7)
    assert (layer.line, layer.col) == (2, 1)
    kind, bottom = layer.value.fields
    assert (kind.line, kind.col, bottom.line, bottom.col, bottom.value.col) == (3, 3, 4, 5, 13)


@pytest.mark.parametrize("text, line, col, words", [
    ('layer {\n  name: "a"\n', 3, 1, ["'{' at line 1, column 7 is never closed", "add the missing '}'"]),
    ('name: "abc\nlayer {}', 1, 7, ["never closed"]),
    ("layer {\n  name: }\n", 2, 9, ["expected a value for 'name'", "'}'"]),
    ("name \"x\"", 1, 6, ["expected ':' or '{' after the field name 'name'"]),
    ("a: 1\n}\n", 2, 1, ["expected a field name, found '}'", "closes nothing"]),
    ("a: 5x", 1, 4, ["'5x' is not a number"]),
    ("a: 1 @", 1, 6, ["unexpected character '@'"]),
    ('a: "\\q"', 1, 5, ["unknown escape '\\q'"]),
    ("a: [1 2]", 1, 7, ["expected ',' or ']'"]),
    ("a: -x", 1, 5, ["expected a number after '-'"]),
    ("[ext]: 1", 1, 1, ["extensions"]),
])
def test_syntax_errors_are_located(text, line, col, words):
    e = error(text)
    assert (e.file, e.line, e.col) == ("net.prototxt", line, col), e.render()
    for w in words:
        assert w in e.render()


def test_decode_types_values_and_keeps_positions():
    msg = parse_text('num_output: 20 kernel_size: 5 kernel_size: 3 bias_term: false engine: CUDNN\n'
                     'weight_filler { type: "xavier" }')
    p = decode(msg, "ConvolutionParameter", "f")
    assert p.get("num_output") == 20 and p.all("kernel_size") == [5, 3] and p.get("bias_term") is False
    assert p.get("engine") == "CUDNN" and p.get("weight_filler").get("type") == "xavier"
    assert p.pos("kernel_size", 1) == (1, 44) and p.get("weight_filler").line == 2
    assert p.get("group", 1) == 1 and not p.has("group")
    nan = decode(parse_text("min: nan max: -inf"), "ClipParameter", "f")
    assert math.isnan(nan.get("min")) and nan.get("max") == -math.inf


@pytest.mark.parametrize("text, kind, col, words", [
    ("kernal_size: 3", "ConvolutionParameter", 1, ["unknown field 'kernal_size' in ConvolutionParameter",
                                                  "did you mean 'kernel_size'?"]),
    ("num_output: 2 num_output: 3", "ConvolutionParameter", 15, ["'num_output' is given twice",
                                                                 "not a repeated field"]),
    ("num_output: -2", "ConvolutionParameter", 13, ["'num_output' must be a non-negative integer, got -2"]),
    ("num_output: 2.5", "ConvolutionParameter", 13, ["must be a non-negative integer"]),
    ("bias_term: yes", "ConvolutionParameter", 12, ["must be true or false"]),
    ("pool: \"MAX\"", "PoolingParameter", 7, ["enum values are written without quotes: pool: MAX"]),
    ("pool: MAXIMUM", "PoolingParameter", 7, ["one of MAX, AVE, STOCHASTIC", "did you mean 'MAX'?"]),
    ("type: Convolution", "LayerParameter", 7, ["must be a quoted string", 'quote it: "Convolution"']),
    ("weight_filler: 3", "ConvolutionParameter", 1, ["is a message: write 'weight_filler { ... }'"]),
    ("num_output { }", "ConvolutionParameter", 1, ["takes a value (a non-negative integer), not a { } block"]),
    ('  net: "lenet.prototxt"', "NetParameter", 3,
     ["this file is a Caffe solver, not a net: 'net' is a field of SolverParameter", "netcfg import-caffe --solver"]),
    ('name: "LeNet"', "SolverParameter", 1,
     ["this file is a Caffe net, not a solver: 'name' is a field of NetParameter", "import a net without --solver"]),
])
def test_decode_errors_are_located_with_a_fix(text, kind, col, words):
    e = error(text, kind)
    assert (e.line, e.col) == (1, col), e.render()
    for w in words:
        assert w in e.render()


def test_a_layer_error_names_the_layer_in_its_key_path():
    e = error('layer { name: "conv1" type: "Convolution" convolution_param { num_ouput: 3 } }', "NetParameter")
    assert "layer[conv1].convolution_param.num_ouput: unknown field" in e.render()
    assert "did you mean 'num_output'?" in e.render()


def test_parse_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        parse_file(tmp_path / "missing.prototxt")
    model = tmp_path / "w.caffemodel"
    model.write_bytes(b"\n\x05conv1\xff\xfe")
    with pytest.raises(ConfigError) as info:
        parse_file(model)
    assert "not UTF-8" in info.value.render() and "--weights" in info.value.render()
    bom = tmp_path / "bom.prototxt"
    bom.write_text('\ufeffname: "x"', encoding="utf-8")
    assert scalars(parse_file(bom)) == {"name": "x"}
