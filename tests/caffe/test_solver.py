"""Caffe solvers -> netcfg solvers: field mapping, Caffe's defaults, the net and data sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from netcfg.caffe.inputs import InputShape
from netcfg.caffe.solver import import_solver
from netcfg.errors import ConfigError, ConfigErrors
from tests.caffe.test_net import SHARED, needs_shared

FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX = f"idx:{FASHION}"
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST (dataset-fashion-mnist) not installed")
LENET = SHARED / "mnist__lenet_train_test.prototxt"
TINY_NET = ('name: "tiny"\nlayer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }\n')


def solver_file(tmp_path: Path, body: str, net: str = "net.prototxt", name: str = "solver.prototxt") -> Path:
    (tmp_path / "net.prototxt").write_text(TINY_NET)
    path = tmp_path / name
    path.write_text(f'net: "{net}"\n' + body)
    return path


@needs_shared
@needs_fashion
def test_lenet_solver_with_idx_data():
    s = import_solver(SHARED / "mnist__lenet_solver.prototxt", LENET, IDX)
    assert s.data == {
        "data": {"train": {"source": "idx", "path": str(FASHION), "split": "train", "batch_size": 64,
                           "scale": 0.00390625},
                 "test": {"source": "idx", "path": str(FASHION), "split": "test", "batch_size": 100,
                          "scale": 0.00390625}},
        "type": "SGD", "base_lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "lr_policy": "inv",
        "gamma": 0.0001, "power": 0.75, "max_iter": 10000, "display": 100, "test_interval": 500, "test_iter": 100,
        "snapshot": 5000, "snapshot_prefix": "lenet"}
    assert any("snapshot_prefix 'examples/mnist/lenet' keeps only its file name" in n for n in s.notes)
    assert s.net.data["inputs"]["data"] == [1, 28, 28]  # read from the IDX files, not assumed
    assert not any("assumed" in n for n in s.net.notes)


@needs_shared
@pytest.mark.parametrize("stem, expected", [
    ("mnist__lenet_multistep_solver", {"lr_policy": "multistep", "gamma": 0.9,
                                       "stepvalue": [5000, 7000, 8000, 9000, 9500]}),
    ("mnist__lenet_solver_adam", {"type": "Adam", "momentum": 0.9, "momentum2": 0.999, "lr_policy": "fixed"}),
    ("mnist__lenet_solver_rmsprop", {"type": "RMSProp", "momentum": 0.0, "rms_decay": 0.98}),
    ("mnist__lenet_adadelta_solver", {"type": "AdaDelta", "momentum": 0.95, "delta": 1e-6, "base_lr": 1.0}),
    ("cifar10__cifar10_full_sigmoid_solver_bn", {"lr_policy": "step", "gamma": 1, "stepsize": 5000,
                                                 "max_iter": 60000, "test_iter": 10}),
])
def test_solver_types_and_policies(stem, expected):
    net = SHARED / ("cifar10__cifar10_full_sigmoid_train_test_bn.prototxt" if "cifar" in stem else LENET.name)
    s = import_solver(SHARED / f"{stem}.prototxt", net)
    assert {k: s.data[k] for k in expected} == expected
    assert "weight_decay" not in s.data if "cifar" in stem else True  # commented out in that file


@needs_shared
@needs_fashion
def test_autoencoder_solver_keeps_the_first_test_state():
    s = import_solver(SHARED / "mnist__mnist_autoencoder_solver_nesterov.prototxt",
                      SHARED / "mnist__mnist_autoencoder.prototxt", IDX)
    assert (s.data["type"], s.data["momentum"], s.data["test_iter"]) == ("Nesterov", 0.95, 500)
    assert s.data["data"]["test"]["split"] == "train"  # the test-on-train stage reads the training database
    # the stage chose that data layer only: in netcfg, a test_stages naming no layer's rule is refused
    assert "test_stages" not in s.data
    assert any(n.startswith("test_stages test-on-train not imported: no layer of the converted net names it")
               for n in s.notes)
    assert any("2 test nets in Caffe; netcfg tests one" in n for n in s.notes)


def test_caffe_defaults_are_written_where_netcfgs_differ(tmp_path):
    adam = import_solver(solver_file(tmp_path, 'type: "Adam" base_lr: 0.1 lr_policy: "fixed"'))
    assert (adam.data["momentum"], adam.data["max_iter"], adam.data["display"]) == (0.0, 0, 0)
    adadelta = import_solver(solver_file(tmp_path, "solver_type: ADADELTA base_lr: 1 lr_policy: \"fixed\" "
                                                   "solver_mode: CPU random_seed: 7"))
    assert {k: adadelta.data[k] for k in ("type", "momentum", "delta", "device", "random_seed")} == \
        {"type": "AdaDelta", "momentum": 0.0, "delta": 1e-8, "device": "cpu", "random_seed": 7}
    sgd = import_solver(solver_file(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" snapshot: 10 device_id: 1 '
                                              "clip_gradients: -1 delta: 0.5"))
    assert (sgd.data["snapshot_prefix"], sgd.data["device"]) == ("solver", "cuda:1")  # Caffe's default prefix
    assert "clip_gradients" not in sgd.data and "delta" not in sgd.data
    assert any("delta: 0.5 is not read by the SGD solver" in n for n in sgd.notes)


def test_without_test_iter_caffe_tests_nothing(tmp_path):
    s = import_solver(solver_file(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" max_iter: 50 test_interval: 10'))
    assert s.data["test_interval"] == 0 and "test_iter" not in s.data  # netcfg would test the whole split
    assert any("test_interval: 10 without test_iter: Caffe runs no test net" in n for n in s.notes)
    s = import_solver(solver_file(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" test_interval: 10 test_iter: 3'))
    assert (s.data["test_interval"], s.data["test_iter"]) == (10, 3)


@pytest.mark.parametrize("body, line_col, words", [
    ('type: "Adamm" base_lr: 1 lr_policy: "fixed"', (2, 7), ["unknown solver type 'Adamm'", "did you mean 'Adam'?"]),
    ('type: "SGD" solver_type: SGD base_lr: 1 lr_policy: "fixed"', (2, 26), ["either type or solver_type"]),
    ('lr_policy: "fixed"', (1, 1), ["base_lr is not set"]),
    ("base_lr: 1 lr_polcy: 2", (2, 12), ["unknown field 'lr_polcy'", "did you mean 'lr_policy'?"]),
    ('base_lr: 1 lr_policy: "fixed" test_net: "a.prototxt"', (2, 41), ["netcfg trains and tests one net"]),
    ('base_lr: 1 lr_policy: "fixed"\ntrain_net: "net.prototxt"', (3, 12),
     ["the training net is given twice, by net and by train_net", "keep one of net, net_param, train_net"]),
    ('net_param { name: "inline" }', (2, 1), ["the training net is given twice, by net and by net_param"]),
])
def test_solver_errors_are_located(tmp_path, body, line_col, words):
    with pytest.raises(ConfigError) as info:
        import_solver(solver_file(tmp_path, body))
    assert (info.value.line, info.value.col) == line_col, info.value.render()
    for w in words:
        assert w in info.value.render()


def test_net_path_is_found_from_the_caffe_root_or_reported(tmp_path):
    root = tmp_path / "caffe"
    (root / "examples" / "tiny").mkdir(parents=True)
    (root / "examples" / "tiny" / "net.prototxt").write_text(TINY_NET)
    solver = root / "examples" / "tiny" / "solver.prototxt"
    solver.write_text('net: "examples/tiny/net.prototxt"\nbase_lr: 0.1 lr_policy: "fixed"')
    assert import_solver(solver).net.data["name"] == "tiny"
    solver.write_text('net: "examples/tiny/other.prototxt"\nbase_lr: 0.1 lr_policy: "fixed"')
    with pytest.raises(ConfigError) as info:
        import_solver(solver)
    assert (info.value.line, info.value.col) == (1, 6) and "net file not found" in info.value.render()
    assert "netcfg import-caffe --solver SOLVER NET.prototxt" in info.value.render()


def test_inline_net_param(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text("net_param {\n" + TINY_NET + '}\nbase_lr: 0.1 lr_policy: "fixed" max_iter: 3')
    s = import_solver(path)
    assert s.net.data["name"] == "tiny" and s.net.file == str(path)
    assert s.net.check()["TRAIN"].total_params == 10


def test_without_data_the_solver_carries_a_template_and_still_validates(tmp_path):
    net = tmp_path / "data_net.prototxt"
    net.write_text('layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }\n'
                   '  data_param { source: "db/train_lmdb" batch_size: 32 } transform_param { mirror: true } }\n'
                   'layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST }\n'
                   '  data_param { source: "db/test_lmdb" batch_size: 50 } }\n'
                   'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                   'inner_product_param { num_output: 10 } }\n'
                   'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }\n')
    path = solver_file(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" test_interval: 10 test_iter: 2', net.name)
    s = import_solver(path, inputs={"data": InputShape([1, 4, 4])})
    assert "data" not in s.data
    assert "  train: {source: '?', path: db/train_lmdb, split: train, batch_size: 32, mirror: true}" in s.data_comment
    assert "  test: {source: '?', path: db/test_lmdb, split: test, batch_size: 50}" in s.data_comment
    s.spec(s.net.data, tmp_path)  # everything but the data section validates
    bad = solver_file(tmp_path, "base_lr: 0.1 lr_policy: \"fixed\" test_interval: -5", net.name, "bad.prototxt")
    with pytest.raises(ConfigErrors) as info:
        import_solver(bad, inputs={"data": InputShape([1, 4, 4])}).spec({"name": "n", "inputs": {"x": [4]}, "layers": [{"name": "r", "type": "ReLU"}]},
                                tmp_path)
    assert [(e.file, e.line) for e in info.value.errors] == [(str(bad), 2)]


def test_clip_gradients_is_divided_by_iter_size_as_caffe_clips_the_sum(tmp_path):
    # Caffe's ClipGradients runs before Normalize: on the gradient summed over iter_size batches.
    # netcfg clips the mean (tests/solver/test_caffe_loop.py), so C with iter_size K is C / K
    body = 'base_lr: 0.1 lr_policy: "fixed" clip_gradients: 10 iter_size: 4'
    s = import_solver(solver_file(tmp_path, body))
    assert (s.data["clip_gradients"], s.data["iter_size"]) == (2.5, 4)
    assert any("clip_gradients 10 with iter_size 4 is written 2.5" in n for n in s.notes)
    one = import_solver(solver_file(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" clip_gradients: 10'))
    assert one.data["clip_gradients"] == 10 and not any("clip_gradients" in n for n in one.notes)


def test_debug_info_is_imported_and_the_solver_takes_it(tmp_path):
    s = import_solver(solver_file(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" display: 1 debug_info: true'))
    assert (s.data["display"], s.data["debug_info"]) == (1, True)
    assert list(s.data).index("debug_info") == list(s.data).index("display") + 1
    assert not any("debug_info" in n for n in s.notes)


def test_debug_info_without_display_is_left_out_with_a_note(tmp_path):
    # Caffe's display defaults to 0, so its debug_info logs nothing; netcfg check refuses the pair
    s = import_solver(solver_file(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" debug_info: true'))
    assert s.data["display"] == 0 and "debug_info" not in s.data
    assert any(n.startswith("debug_info: true without display is not imported") for n in s.notes)


def test_a_test_layers_mirror_is_not_imported_as_netcfg_refuses_it(tmp_path):
    # Caffe's DataTransformer flips with mirror: true in either phase; netcfg's test split
    # refuses random augmentation (a test sees each image as it is)
    net = tmp_path / "data_net.prototxt"
    net.write_text(''.join(
        f'layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: {phase} }}\n'
        f'  data_param {{ source: "db/{phase}" batch_size: 8 }} transform_param {{ mirror: true scale: 0.0625 }} }}\n'
        for phase in ("TRAIN", "TEST")) + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        'inner_product_param { num_output: 10 } }\nlayer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" '
        'bottom: "label" }\n')
    s = import_solver(solver_file(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" test_interval: 10 test_iter: 2', net.name),
                      data="digits")
    assert s.data["data"]["train"]["mirror"] is True and "mirror" not in s.data["data"]["test"]
    assert any("mirror: true is not imported for the TEST phase" in n for n in s.notes)
    s.spec(s.net.data, tmp_path)  # and the solver validates


def test_a_stage_a_layer_of_the_net_names_is_imported(tmp_path):
    staged = TINY_NET + ('layer { name: "r" type: "ReLU" bottom: "y" top: "y" include { stage: "deploy" } }\n')
    path = solver_file(tmp_path, 'base_lr: 0.1 lr_policy: "fixed" test_state { stage: "deploy" stage: "other" } '
                                 'train_state { stage: "deploy" }')
    (tmp_path / "net.prototxt").write_text(staged)
    s = import_solver(path)
    assert (s.data["train_stages"], s.data["test_stages"]) == (["deploy"], ["deploy"])
    assert any(n.startswith("test_stages other not imported") for n in s.notes)
