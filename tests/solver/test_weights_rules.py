"""``weights:`` rules, ``freeze:`` and ``netcfg weights``: the fine-tuning flow end to end, small.

Step 1 trains a tiny net on digits 0-4, step 2 fine-tunes it on a few images of digits
5-9 from step 1's run directory without its classifier, with the first layers frozen,
as solvers/finetune_fmnist_*.yaml do on Fashion-MNIST.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from netcfg.errors import ConfigErrors
from netcfg.solver import Solver
from netcfg.solver.spec import load_solver
from tests.cli.test_train import netcfg
from tests.solver.test_runner import write_solver

NET = """\
name: TinyBN
inputs:
  data: [1, 8, 8]
  label: {shape: [], dtype: int64}
layers:
  - {name: ip1, type: InnerProduct, bottom: data, num_output: 16, weight_filler: {type: xavier}}
  - {name: bn1, type: BatchNorm}
  - {name: relu1, type: ReLU}
  - {name: ip2, type: InnerProduct, num_output: 5, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
"""
FIRST = {"classes": [0, 1, 2, 3, 4], "limit": None}
SECOND = {"classes": [5, 6, 7, 8, 9], "per_class": 4, "limit": None}


@pytest.fixture(scope="module")
def step1(tmp_path_factory) -> Path:
    """The run directory of a few iterations on digits 0-4."""
    root = tmp_path_factory.mktemp("step1")
    solver = write_solver(root, NET, name="first", max_iter=6, test=False, train=FIRST)
    Solver.from_file(solver, out=root / "run", log=lambda line: None).solve()
    return root / "run"


def second(tmp_path: Path, step1: Path, **keys) -> Path:
    keys.setdefault("weights", [{"file": str(step1), "exclude": [r"ip2\."]}])
    path = write_solver(tmp_path, NET, name="second", max_iter=5, train=SECOND, **keys)
    solver = yaml.safe_load(path.read_text())
    solver["data"]["test"]["classes"] = [5, 6, 7, 8, 9]  # (write_solver's `test` is a flag)
    path.write_text(yaml.safe_dump(solver, sort_keys=False))
    return path


def test_fine_tune_copies_all_but_the_classifier_and_frozen_layers_do_not_move(tmp_path, step1):
    source = load_file(step1 / "tiny_iter_6.safetensors")
    lines = []
    s = Solver.from_file(second(tmp_path, step1, freeze=["ip1", "bn1"]), out=tmp_path / "run", log=lines.append)
    net = s.net.state_dict()
    for name in ("ip1.weight", "ip1.bias", "bn1.weight", "bn1.running_mean", "bn1.running_var"):
        assert torch.equal(net[name], source[name]), name
    assert not torch.equal(net["ip2.weight"], source["ip2.weight"])  # excluded: left as its filler made it
    assert "missing, left as initialised (2): ip2.weight, ip2.bias" in lines
    start = {k: v.clone() for k, v in net.items()}
    s.solve()
    after = s.net.state_dict()
    for name in ("ip1.weight", "ip1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"):
        assert torch.equal(after[name], start[name]), f"{name} moved although frozen"
    assert not torch.equal(after["ip2.weight"], start["ip2.weight"])
    assert "freeze: 1,072 of 1,157 parameters frozen (4 tensors), 85 trainable; statistics fixed (eval mode) " \
           "in 1 norm layer(s)" in lines
    assert 0 <= s.test()["accuracy"] <= 1  # the test net (classes 5-9 relabelled 0..4) runs
    # the run's config.yaml pins the snapshot that the run directory gave, and loads back
    config = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
    assert config["weights"][0]["file"] == str(step1 / "tiny_iter_6.safetensors")
    assert load_solver(tmp_path / "run/config.yaml").weights[0].exclude == [r"ip2\."]


def test_an_unfrozen_batchnorm_does_update_its_statistics(tmp_path, step1):
    s = Solver.from_file(second(tmp_path, step1, freeze=["ip1"]), out=tmp_path / "run", log=lambda line: None)
    before = s.net.state_dict()["bn1.running_mean"].clone()
    s.step(2)
    assert not torch.equal(s.net.state_dict()["bn1.running_mean"], before)


def test_rename_and_pth_state_dicts(tmp_path, step1):
    source = load_file(step1 / "tiny_iter_6.safetensors")
    theirs = {k.replace("ip1.", "encoder.0.").replace("bn1.", "encoder.1."): v for k, v in source.items()}
    torch.save(theirs, tmp_path / "theirs.pth")
    rule = {"file": "theirs.pth", "include": ["encoder"], "rename": {r"^encoder\.0\.": "ip1.", r"^encoder\.1\.": "bn1."}}
    solver = second(tmp_path, step1, weights=[rule])
    code, out, err = netcfg("weights", solver)
    assert code == 0, err
    assert "encoder.0.weight -> ip1.weight" in out and "encoder.1.running_var -> bn1.running_var" in out
    assert "excluded by include/exclude (2): ip2.bias, ip2.weight" in out
    s = Solver.from_file(solver, out=tmp_path / "run", log=lambda line: None)
    assert torch.equal(s.net.state_dict()["ip1.weight"], source["ip1.weight"])


def test_a_strict_rule_refuses_what_it_cannot_fill_with_exit_2(tmp_path, step1):
    solver = second(tmp_path, step1, weights=[{"file": str(step1), "exclude": [r"ip2\."], "strict": True}])
    code, out, err = netcfg("weights", solver)
    assert code == 2
    assert "missing, left as initialised (2): ip2.weight, ip2.bias" in out
    assert "second.yaml:" in err and "weights[0].strict: strict rule refuses: 2 net blobs are not filled" in err
    code, out, err = netcfg("train", solver, "--out", tmp_path / "run")
    assert code == 2 and "strict rule refuses" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


@pytest.mark.parametrize("rule, where, words", [
    ({"file": "nowhere.safetensors"}, "weights[0].file", "weights file not found"),
    ({"file": "STEP1", "include": ["(ip"]}, "weights[0].include[0]", "bad regular expression '(ip'"),
    ({"file": "STEP1", "exclude": ["ip3"]}, "weights[0].exclude[0]", "exclude pattern 'ip3' matches no blob"),
    ({"file": "STEP1", "rename": {"^": "model."}}, "weights[0]", "this rule fills no blob of the net"),
    ({"file": "STEP1", "rename": {"^(ip)": r"\2"}}, "weights[0].rename.^(ip)", "bad replacement"),
    ({"file": "STEP1", "strict": "maybe"}, "weights[0].strict", "valid boolean"),
])
def test_bad_rules_are_located_errors(tmp_path, step1, rule, where, words):
    rule = {k: (str(step1) if v == "STEP1" else v) for k, v in rule.items()}
    code, out, err = netcfg("train", second(tmp_path, step1, weights=[rule]), "--out", tmp_path / "run")
    assert code == 2, err
    line = next(x for x in err.splitlines() if where + ":" in x)
    assert line.startswith(f"{tmp_path / 'second.yaml'}:") and words in line, err
    assert "Traceback" not in err


def test_bad_freeze_patterns_are_located_errors(tmp_path, step1):
    for freeze, words in ((["ip9"], "freeze[0]: freeze pattern 'ip9' matches no parameter"),
                          (["ip", "bn"], "freeze: freeze matches every parameter"),
                          (["[ip"], "freeze[0]: bad regular expression")):
        with pytest.raises(ConfigErrors) as e:
            Solver.from_file(second(tmp_path, step1, freeze=freeze), out=tmp_path / "run", log=lambda line: None)
        assert words in e.value.render() and "second.yaml:" in e.value.render()


def test_a_layer_is_copied_whole_or_not_at_all(tmp_path, step1):
    # a new hidden layer before the classifier changes ip2.weight ([5, 16] -> [5, 8]) but not
    # ip2.bias ([5]): the rule copied the bias alone, half a classifier
    source = load_file(step1 / "tiny_iter_6.safetensors")
    net = NET.replace("  - {name: ip2,", "  - {name: ip1b, type: InnerProduct, num_output: 8}\n  - {name: ip2,")
    solver = write_solver(tmp_path, net, name="second", max_iter=0, test=False, train=SECOND,
                          weights=[{"file": str(step1)}])
    code, out, err = netcfg("weights", solver)
    assert code == 0, err
    assert "shape mismatch, left as initialised (1): ip2.weight (file [5, 16], net [5, 8])" in out
    assert "left as initialised with their layer, which has a shape mismatch (1): ip2.bias" in out
    assert "missing, left as initialised (4): ip1b.weight, ip1b.bias, ip2.weight, ip2.bias" in out
    s = Solver.from_file(solver, out=tmp_path / "run", log=lambda line: None)
    assert torch.equal(s.net.state_dict()["ip1.weight"], source["ip1.weight"])
    assert not torch.equal(s.net.state_dict()["ip2.bias"], source["ip2.bias"])
    # a BatchNorm whose statistics do not fit keeps its own counter too
    wide = write_solver(tmp_path / "wide", NET.replace("num_output: 16", "num_output: 8"), name="second",
                        max_iter=0, test=False, train=SECOND, weights=[{"file": str(step1), "include": ["bn1"]}])
    code, out, err = netcfg("weights", wide)
    assert code == 2 and "weights[0]: this rule fills no blob of the net" in err, err


def test_a_caffemodel_is_sent_to_import_caffe(tmp_path, step1):
    (tmp_path / "bvlc.caffemodel").write_bytes(b"\x0a\x05lenet" + bytes(range(200)))
    solver = second(tmp_path, step1, weights="bvlc.caffemodel")
    for command in (["train", solver, "--out", tmp_path / "run"], ["weights", solver]):
        code, out, err = netcfg(*command)  # was: 'not a readable .safetensors weights file (... header too large)'
        assert code == 2 and "is Caffe weights, which netcfg reads once converted: netcfg import-caffe " \
                             "NET.prototxt --weights bvlc.caffemodel -o NET.yaml" in err, err


def test_the_dry_run_of_a_weights_file_names_the_weights_key(tmp_path, step1):
    # it named a key the solver file does not have: weights[0].file
    code, out, err = netcfg("weights", second(tmp_path, step1, weights="nowhere.safetensors"))
    assert code == 2 and f"{tmp_path / 'second.yaml'}:" in err and ": error: weights: weights file not found" in err, err


@pytest.mark.parametrize("command", ["train", "weights"])
def test_a_weights_file_that_cannot_be_used_is_refused_at_the_weights_key_naming_the_file(tmp_path, step1, command):
    # train reported these at the weights file's own path: no line of the solver, no key
    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 64)
    torch.save({"encoder.weight": torch.ones(3, 3)}, tmp_path / "unrelated.pt")
    cases = {"nowhere.safetensors": f"weights file not found: {tmp_path / 'nowhere.safetensors'} (files there: ",
             "garbage.safetensors": f"{tmp_path / 'garbage.safetensors'}: not a readable .safetensors weights file",
             "unrelated.pt": "unrelated.pt"}
    for file, message in cases.items():
        solver = second(tmp_path, step1, weights=file)
        line = solver.read_text().splitlines().index(f"weights: {file}") + 1
        code, out, err = netcfg(command, solver, *(["--out", tmp_path / "run"] if command == "train" else []))
        assert code == 2 and err.startswith(f"{solver}:{line}:10: error: weights: "), err
        assert message in err, err
        assert not (tmp_path / "run").exists()


def test_the_dry_run_counts_blobs_as_its_total_does(tmp_path, step1):
    # the rule said "9 matched" (bn1.num_batches_tracked counted), the total "8 of 8 net blobs filled"
    code, out, err = netcfg("weights", second(tmp_path, step1, weights=[{"file": str(step1)}]))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("(8 blobs, not counting its 1 num_batches_tracked): 8 matched, 0 renamed, 0 excluded, "
                             "0 unused, 0 shape mismatches"), out
    assert "bn1.num_batches_tracked" not in out
    assert "weights: 8 of 8 net blobs filled from 1 rule(s)" in lines


def test_a_test_only_blob_of_another_shape_is_reported_not_skipped(tmp_path, step1):
    # a TEST-only ip2 of another width than the TRAIN ip2 was left as initialised, unsaid
    net = NET.replace("  - {name: ip2, type: InnerProduct, num_output: 5, weight_filler: {type: xavier}}\n",
                      "  - {name: ip2, type: InnerProduct, num_output: 5, include: {phase: TRAIN}}\n"
                      "  - {name: ip2, type: InnerProduct, bottom: relu1, num_output: 3, include: {phase: TEST}}\n")
    left = "ip2.weight (TEST [3, 16], TRAIN [5, 16]), ip2.bias (TEST [3], TRAIN [5])"
    solver = write_solver(tmp_path, net, name="second", max_iter=0, train=SECOND, weights=[{"file": str(step1)}])
    config = yaml.safe_load(solver.read_text())
    config["data"]["test"]["classes"] = [5, 6, 7]  # (write_solver's `test` is a flag)
    solver.write_text(yaml.safe_dump(config, sort_keys=False))
    code, out, err = netcfg("weights", solver)
    assert code == 0 and f"TEST net only, another shape than the TRAIN net's blob of that name, left as initialised " \
                         f"(2): {left}" in out, out + err
    code, out, err = netcfg("weights", solver, "--set", "weights.0.strict=true")
    assert code == 2 and "strict rule refuses: 2 TEST net blobs are not filled" in err, err
    lines = []  # the plain file: the TEST net's copy by name
    Solver(load_solver(solver, [f"weights={step1}"]), out=tmp_path / "run", log=lines.append)
    assert "  TEST net only, shape mismatch, left as initialised: ip2.weight (file [5, 16], net [3, 16]), " \
           "ip2.bias (file [5], net [3])" in lines, lines


def test_a_rename_of_left_out_blobs_only_says_so(tmp_path, step1):
    # it said "rename pattern '^ip2\.' matches no blob of tiny_iter_6.safetensors", though the file has ip2.weight
    rule = {"file": str(step1), "exclude": [r"ip2\."], "rename": {r"^ip2\.": "head."}}
    code, out, err = netcfg("weights", second(tmp_path, step1, weights=[rule]))
    assert code == 2 and "weights[0].rename.^ip2\\.: rename pattern '^ip2\\\\.' matches only blobs that " \
                         "include/exclude leave out (ip2.bias, ip2.weight), so it renames nothing" in err, err
    rule["rename"] = {"^ipx": "head"}  # a typo is still one
    code, out, err = netcfg("weights", second(tmp_path, step1, weights=[rule]))
    assert code == 2 and "rename pattern '^ipx' matches no blob of tiny_iter_6.safetensors" in err, err


def test_a_rename_of_two_blobs_onto_one_net_blob_is_refused(tmp_path, step1):
    # both were listed as matched, and the file's order chose which one ip1.weight kept
    source = load_file(step1 / "tiny_iter_6.safetensors")
    torch.save({"a.0.weight": source["ip1.weight"], "a.1.weight": -source["ip1.weight"]}, tmp_path / "two.pt")
    rule = {"file": "two.pt", "rename": {r"^a\.\d\.": "ip1."}}
    code, out, err = netcfg("weights", second(tmp_path, step1, weights=[rule]))
    assert code == 2 and "weights[0].rename: 2 blobs of two.pt are renamed onto one net blob: a.0.weight, " \
                         "a.1.weight -> ip1.weight" in err, out + err


def test_a_missing_weights_folder_is_hinted_where_it_was_looked_for(tmp_path, step1, monkeypatch):
    # train --weights nowhere/w.safetensors resolves against the working directory, but the hint said
    # "a relative path resolves against the solver file's directory": a false lead to a user in another folder
    solver = second(tmp_path / "solvers", step1, weights=None)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = netcfg("train", solver, "--weights", "nowhere/w.safetensors", "--out", tmp_path / "run")
    missing = tmp_path / "work" / "nowhere"
    assert (code, err) == (2, f"--weights: error: weights: weights file not found: {missing / 'w.safetensors'} "
                              f"(there is no folder {missing})\n")
    code, _, err = netcfg("train", solver, "--set", "weights=nowhere/deeper/w.safetensors", "--out", tmp_path / "run")
    missing = tmp_path / "solvers" / "nowhere"  # the first folder that is not there, not its child
    assert code == 2 and err.endswith(f"(there is no folder {missing}; a relative path resolves against the solver "
                                      "file's directory)\n"), err
    assert not (tmp_path / "run").exists()
