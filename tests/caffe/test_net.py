"""Caffe nets -> netcfg nets: the BVLC files, parameter counts, layer mapping, merges, located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from netcfg.caffe.inputs import InputShape
from netcfg.caffe.net import import_net
from netcfg.errors import ConfigError, ConfigErrors

# The project keeps them in shared/ beside its checkout; a git worktree sits a level deeper.
SHARED = next((d / "shared" / "caffe" for d in Path(__file__).resolve().parents if (d / "shared" / "caffe").is_dir()),
              Path(__file__).resolve().parents[3] / "shared" / "caffe")
NETS = sorted(p for p in SHARED.glob("*.prototxt") if "solver" not in p.name)
needs_shared = pytest.mark.skipif(not NETS, reason="the BVLC .prototxt files in ../shared/caffe are not here")


def write(tmp_path: Path, text: str, name: str = "net.prototxt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path, **kw) -> list[ConfigError]:
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        import_net(path, **kw).check()
    return getattr(info.value, "errors", [info.value])


def layers_by_name(imported) -> dict:
    return {layer["name"]: layer for layer in imported.data["layers"]}


INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n'


@needs_shared
@pytest.mark.parametrize("path", NETS, ids=lambda p: p.stem)
def test_every_bvlc_net_converts_and_checks_in_both_phases(path):
    graphs = import_net(path).check()
    assert graphs["TRAIN"].total_params == graphs["TEST"].total_params > 0


# Parameter counts, by hand from the .prototxt files (weights + biases; Caffe's count):
#   LeNet: conv1 20*1*5*5+20 = 520; conv2 50*20*5*5+50 = 25,050; 28 -> 24 -> 12 -> 8 -> 4, so
#     ip1 50*4*4*500+500 = 400,500; ip2 500*10+10 = 5,010. Total 431,080.
#   CIFAR-10 quick (3x32x32): conv1 32*3*25+32 = 2,432; conv2 32*32*25+32 = 25,632; conv3 64*32*25+64
#     = 51,264; spatial 32 -> pool 16 -> 8 -> 4 (Caffe's ceil: (32-3)/2 -> 15 -> 16), so ip1 64*4*4*64+64
#     = 65,600; ip2 64*10+10 = 650. Total 145,578.
#   AlexNet (3x227x227): conv1 96*3*11*11+96 = 34,944; conv2 (group 2) 256*48*25+256 = 307,456;
#     conv3 384*256*9+384 = 885,120; conv4 (group 2) 384*192*9+384 = 663,936; conv5 (group 2)
#     256*192*9+256 = 442,624; fc6 4096*256*6*6+4096 = 37,752,832; fc7 4096*4096+4096 = 16,781,312;
#     fc8 1000*4096+1000 = 4,097,000. Total 60,965,224.
#   GoogLeNet (3x224x224): conv1 64*3*49+64 = 9,472; conv2/3x3_reduce 64*64+64 = 4,160; conv2/3x3
#     192*64*9+192 = 110,784. An inception block on C channels with (n1, r3, n3, r5, n5, pool_proj) has
#     C*n1+n1 + C*r3+r3 + r3*n3*9+n3 + C*r5+r5 + r5*n5*25+n5 + C*pp+pp:
#     3a C=192 (64,96,128,16,32,32) 163,696; 3b C=256 (128,128,192,32,96,64) 388,736;
#     4a C=480 (192,96,208,16,48,64) 376,176; 4b C=512 (160,112,224,24,64,64) 449,160;
#     4c C=512 (128,128,256,24,64,64) 510,104; 4d C=512 (112,144,288,32,64,64) 605,376;
#     4e C=528 (256,160,320,32,128,128) 868,352; 5a C=832 (256,160,320,32,128,128) 1,043,456;
#     5b C=832 (384,192,384,48,128,128) 1,444,080; loss3/classifier 1024*1000+1000 = 1,025,000.
#     Total 6,998,552.
PARAMS = {"mnist__lenet_train_test": 431_080, "mnist__lenet": 431_080, "cifar10__cifar10_quick_train_test": 145_578,
          "bvlc_alexnet__deploy": 60_965_224, "bvlc_googlenet__deploy": 6_998_552}


@needs_shared
@pytest.mark.parametrize("stem, count", PARAMS.items())
def test_parameter_counts_equal_caffes(stem, count):
    assert import_net(SHARED / f"{stem}.prototxt").check()["TRAIN"].total_params == count


@needs_shared
def test_lenet_maps_layers_params_fillers_rules_and_inputs():
    net = import_net(SHARED / "mnist__lenet_train_test.prototxt")
    assert net.data["name"] == "LeNet"
    assert net.data["inputs"] == {"data": [1, 28, 28], "label": {"shape": [], "dtype": "int64"}}
    assert any("assumed to be MNIST" in n for n in net.notes)
    by = layers_by_name(net)
    assert list(by) == ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "accuracy", "loss"]
    assert by["conv1"] == {"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1", "num_output": 20,
                           "kernel_size": 5, "stride": 1, "weight_filler": {"type": "xavier"},
                           "bias_filler": {"type": "constant"}, "param": [{"lr_mult": 1}, {"lr_mult": 2}]}
    assert by["pool1"]["pool"] == "MAX" and by["relu1"]["bottom"] == by["relu1"]["top"] == "ip1"
    assert by["accuracy"]["include"] == {"phase": "TEST"} and by["loss"]["bottom"] == ["ip2", "label"]
    graphs = net.check()
    assert "accuracy" not in [n.name for n in graphs["TRAIN"].nodes]
    assert "accuracy" in [n.name for n in graphs["TEST"].nodes]


@needs_shared
def test_googlenet_keeps_slashed_names_concats_and_dropout():
    net = import_net(SHARED / "bvlc_googlenet__deploy.prototxt")
    by = layers_by_name(net)
    assert by["inception_3a/output"]["type"] == "Concat"
    assert by["pool5/drop_7x7_s1"]["dropout_ratio"] == 0.4
    assert by["conv1/7x7_s2"]["weight_filler"] == {"type": "xavier"}  # Caffe's xavier ignores its std: 0.1
    assert net.data["inputs"] == {"data": [3, 224, 224]}


@needs_shared
def test_deprecated_and_duplicate_forms_in_the_bvlc_files():
    siamese = import_net(SHARED / "siamese__mnist_siamese_train_test.prototxt")
    by = layers_by_name(siamese)
    assert by["slice_pair"]["axis"] == 1 and by["slice_pair"]["slice_point"] == [1]  # slice_dim: 1
    assert by["conv1_p"]["param"][0] == {"name": "conv1_w", "lr_mult": 1}
    assert siamese.check()["TRAIN"].total_params == 431_102  # the two towers share every blob
    auto = import_net(SHARED / "mnist__mnist_autoencoder.prototxt")
    by = layers_by_name(auto)
    assert by["loss_2"]["type"] == "EuclideanLoss" and by["loss_2"]["loss_weight"] == 0
    assert any("renamed 'loss_2'" in n for n in auto.notes)
    assert by["encode1"]["weight_filler"] == {"type": "gaussian", "std": 1, "sparse": 15}
    assert by["encode1"]["param"][1] == {"lr_mult": 1, "decay_mult": 0}


def test_batchnorm_and_scale_pair_becomes_one_batchnorm(tmp_path):
    path = write(tmp_path, INPUT + """
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
        param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }
        batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 } }
layer { name: "sc" type: "Scale" bottom: "data" top: "data" param { lr_mult: 2 decay_mult: 0 }
        scale_param { bias_term: true filler { value: 1 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "data" top: "n2" }
layer { name: "s2" type: "Scale" bottom: "n2" top: "s2" }
""")
    net = import_net(path)
    by = layers_by_name(net)
    assert list(by) == ["bn", "bn2", "s2"]
    assert by["bn"] == {"name": "bn", "type": "BatchNorm", "bottom": "data", "top": "data",
                        "moving_average_fraction": 0.9, "eps": 0.001, "weight_filler": {"type": "constant", "value": 1},
                        "param": [{"lr_mult": 2, "decay_mult": 0}]}
    assert net.merged == {"sc": "bn"}
    # a Scale without bias_term is not BatchNorm's affine: both layers stay, the BatchNorm without one
    assert by["bn2"]["affine"] is False and by["s2"]["type"] == "Scale"
    assert net.check()["TRAIN"].total_params == 3 + 3 + 3


@pytest.mark.parametrize("kind", ["Scale", "Bias"])
def test_a_second_bottom_imports_only_at_caffes_axis_0(tmp_path, kind):
    """Caffe's default axis 1 reads a (4, 4) second bottom as a batchless (C, H) blob; netcfg
    lines it up from the batch (x + b[n, c]), so Bias imported it silently with another meaning."""
    two = ('layer { name: "in" type: "Input" top: "data" top: "b" '
           'input_param { shape { dim: 4 dim: 4 dim: 4 dim: 4 } shape { dim: 4 dim: 4 } } }\n'
           f'layer {{ name: "op" type: "{kind}" bottom: "data" bottom: "b" top: "out" PARAM }}\n')
    (e,) = errors_of(write(tmp_path, two.replace("PARAM", "")))
    assert e.line == 2 and ".bottom:" in e.render()
    assert f"{kind} with a second bottom and axis 1: in netcfg every blob has a batch axis" in e.render()
    (e,) = errors_of(write(tmp_path, two.replace("PARAM", f"{kind.lower()}_param {{ axis: 1 }}")))
    assert e.line == 2 and "axis 1" in e.render()
    net = import_net(write(tmp_path, two.replace("PARAM", f"{kind.lower()}_param {{ axis: 0 }}")))
    assert "axis" not in layers_by_name(net)["op"] and net.check()["TRAIN"].total_params == 0


def test_batchnorm_whose_output_is_read_elsewhere_is_not_merged(tmp_path):
    path = write(tmp_path, INPUT + """
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
layer { name: "sc" type: "Scale" bottom: "bn" top: "sc" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "bn" bottom: "sc" top: "sum" }
""")
    by = layers_by_name(import_net(path))
    assert by["bn"]["affine"] is False and by["sc"]["bias_term"] is True


def test_deploy_inputs_of_both_forms(tmp_path):
    dims = write(tmp_path, 'input: "data" input_dim: 10 input_dim: 3 input_dim: 8 input_dim: 8\n'
                           'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }', "dims.prototxt")
    shapes = write(tmp_path, 'input: "a" input_shape { dim: 1 dim: 4 } input: "b" input_shape { dim: 1 dim: 4 }\n'
                             'layer { name: "s" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }', "shapes.prototxt")
    assert import_net(dims).data["inputs"] == {"data": [3, 8, 8]}
    assert import_net(shapes).data["inputs"] == {"a": [4], "b": [4]}
    bad = write(tmp_path, 'input: "data" input_dim: 1 input_dim: 3\nlayer { name: "r" type: "ReLU" bottom: "data" }')
    (e,) = errors_of(bad)
    assert (e.line, e.col) == (1, 26) and "need 4 input_dim values (N, C, H, W each), got 2" in e.render()


def test_net_level_switches_without_a_counterpart_are_noted(tmp_path):
    path = write(tmp_path, 'force_backward: true debug_info: true\ninput: "data" input_shape { dim: 1 dim: 4 }\n'
                           'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    notes = import_net(path).notes
    assert any(n.startswith("force_backward: true is not imported") for n in notes)
    assert any(n.startswith("debug_info: true is not imported") for n in notes)
    default = write(tmp_path, 'force_backward: false\ninput: "data" input_shape { dim: 1 dim: 4 }\n'
                              'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }', "default.prototxt")
    assert import_net(default).notes == []  # Caffe's default: nothing dropped


def test_v1_layers_are_refused_naming_the_upgrade_tool(tmp_path):
    path = write(tmp_path, 'name: "old"\nlayers {\n  name: "conv1"\n  type: CONVOLUTION\n}\n')
    (e,) = errors_of(path)
    assert (e.line, e.col) == (2, 1)
    assert "deprecated V1 format" in e.render() and "upgrade_net_proto_text" in e.render()


def test_unknown_layer_types_are_all_reported_at_their_lines(tmp_path):
    path = write(tmp_path, INPUT + 'layer { name: "p" type: "Python" bottom: "data" top: "p" }\n'
                                   'layer { name: "m" type: "WindowData" bottom: "p" top: "m" }\n'
                                   'layer { name: "r" type: "Relu" bottom: "m" top: "r" }\n')
    errs = errors_of(path)
    assert [(e.line, e.col) for e in errs] == [(2, 25), (3, 25), (4, 25)]
    assert "a Python layer runs your own code" in errs[0].render()
    assert "Caffe layer type 'WindowData' has no netcfg equivalent" in errs[1].render()
    assert "did you mean 'ReLU'?" in errs[2].render()
    for e in errs:  # every one lists what can be imported
        assert "importable Caffe types: AbsVal, Accuracy," in e.render() and "SoftmaxWithLoss" in e.render()


def test_options_netcfg_lacks_are_refused_at_their_line(tmp_path):
    path = write(tmp_path, INPUT + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
                                   '  inner_product_param { num_output: 2 transpose: true } }\n')
    (e,) = errors_of(path)
    assert (e.line, e.col) == (3, 50) and "transpose: True is not supported" in e.render()
    stochastic = write(tmp_path, INPUT + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n'
                                         '  pooling_param { pool: STOCHASTIC kernel_size: 2 } }\n', "s.prototxt")
    (e,) = errors_of(stochastic)
    assert e.line == 3 and "no STOCHASTIC pooling" in e.render()


def test_netcfg_validation_and_shape_errors_point_into_the_prototxt(tmp_path):
    shape = write(tmp_path, INPUT + 'layer {\n  name: "conv"\n  type: "Convolution"\n  bottom: "data"\n'
                                    '  top: "c"\n  convolution_param { num_output: 4 kernel_size: 9 } }\n')
    (e,) = errors_of(shape)  # the 9x9 kernel on an 8x8 input, at the kernel_size line
    assert (e.file, e.line, e.col) == (str(shape), 7, 50) and "larger than the padded input" in e.render()
    schema = write(tmp_path, INPUT + 'layer { name: "pool" type: "Pooling" bottom: "data" top: "p"\n'
                                     '  pooling_param { stride: 2 } }\n', "schema.prototxt")
    (e,) = errors_of(schema)  # no kernel: netcfg's own schema error, at the layer's line
    assert (e.file, e.line) == (str(schema), 2) and "give kernel_size" in e.render()


def test_data_layer_shapes_come_from_the_input_option_or_are_asked_for(tmp_path):
    path = write(tmp_path, 'layer { name: "d" type: "Data" top: "img" top: "y" data_param { source: "my_lmdb"\n'
                           '  batch_size: 8 } transform_param { crop_size: 5 } }\n'
                           'layer { name: "ip" type: "InnerProduct" bottom: "img" top: "ip"\n'
                           '  inner_product_param { num_output: 3 } }\n'
                           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" }\n')
    (e,) = errors_of(path)
    assert (e.line, e.col) == (1, 37) and "--input img=C,H,W" in e.render()
    net = import_net(path, inputs={"img": InputShape([3, 5, 5])})
    assert net.data["inputs"] == {"img": [3, 5, 5], "y": {"shape": [], "dtype": "int64"}}
    assert net.check()["TRAIN"].total_params == 3 * 75 + 3


def test_memory_data_without_channels_height_or_width_says_which_is_missing(tmp_path):
    ip = 'layer { name: "ip" type: "InnerProduct" bottom: "img" top: "ip" inner_product_param { num_output: 3 } }\n'
    path = write(tmp_path, 'layer { name: "m" type: "MemoryData" top: "img"\n'
                           '  memory_data_param { batch_size: 4 height: 5 width: 5 } }\n' + ip)
    (e,) = errors_of(path)
    assert (e.line, e.col) == (2, 3)
    assert e.message == ("MemoryData layer 'm' has no channels: Caffe requires channels, height and width in "
                         "memory_data_param, each at least 1")
    assert "--input img=C,H,W" in e.hint
    path = write(tmp_path, 'layer { name: "m" type: "MemoryData" top: "img"\n'
                           '  memory_data_param { batch_size: 4 channels: 0 height: 5 } }\n' + ip)
    (e,) = errors_of(path)
    assert (e.line, e.col) == (2, 47) and "'m' has channels: 0 and no width:" in e.message
    net = import_net(path, inputs={"img": InputShape([1, 5, 5])})  # the shape given instead
    assert net.data["inputs"] == {"img": [1, 5, 5]}


def test_a_param_message_the_type_does_not_read_is_a_note(tmp_path):
    path = write(tmp_path, INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r"\n'
                                   '  convolution_param { num_output: 3 } propagate_down: false }\n')
    net = import_net(path)
    assert any("convolution_param is not read by ReLU" in n for n in net.notes)
    assert any("propagate_down is ignored" in n for n in net.notes)
    assert layers_by_name(net)["r"] == {"name": "r", "type": "ReLU", "bottom": "data", "top": "r"}


def test_dummy_and_memory_data_rules_and_loss_weights(tmp_path):
    path = write(tmp_path, """
layer { name: "m" type: "MemoryData" top: "img" top: "y" memory_data_param { batch_size: 4 channels: 1 height: 5
        width: 5 } }
layer { name: "z" type: "DummyData" top: "noise" dummy_data_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "img" top: "ip" inner_product_param { num_output: 3 }
        include { stage: "a" stage: "b" not_stage: "c" min_level: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "ip" bottom: "noise" top: "sum" loss_weight: 0.5
        eltwise_param { operation: SUM coeff: 1 coeff: -1 } exclude { phase: TEST } }
""")
    net = import_net(path)
    assert net.data["inputs"] == {"img": [1, 5, 5], "y": {"shape": [], "dtype": "int64"}, "noise": [3]}
    by = layers_by_name(net)
    assert by["sum"]["exclude"] == {"phase": "TEST"}
    assert by["ip"]["include"] == {"stage": ["a", "b"], "not_stage": ["c"], "min_level": 1}
    assert by["sum"]["coeff"] == [1, -1] and by["sum"]["loss_weight"] == 0.5
    from netcfg.net import build_graph

    spec = net.spec()
    assert [n.name for n in build_graph(spec, "TRAIN", ["a", "b"], level=1).nodes] == ["ip", "sum"]
    assert build_graph(spec, "TRAIN", ["a", "b"], level=1).losses == {"sum": 0.5}


def test_include_and_exclude_on_one_layer_is_refused_at_the_second_as_caffe_does(tmp_path):
    for first, second in (("include", "exclude"), ("exclude", "include")):
        path = write(tmp_path, INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" '
                                       f'{first} {{ phase: TRAIN }} {second} {{ stage: "x" }} }}\n')
        (e,) = errors_of(path)
        assert e.message.startswith("layer 'r' has both include and exclude rules; Caffe refuses that")
        assert e.path[-1] == second and (e.line, e.col) == (2, 81)  # the second rule's key
    data = write(tmp_path, 'layer { name: "d" type: "Data" top: "img" data_param { source: "x" batch_size: 2 }\n'
                           '  include { phase: TRAIN } exclude { stage: "y" } }\n')
    (e,) = errors_of(data, inputs={"img": InputShape([1, 2, 2])})
    assert e.path[-1] == "exclude" and e.line == 2
