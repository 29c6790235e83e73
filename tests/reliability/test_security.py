"""Files never run code: no pickle, safe YAML, plugins only when named, paths that stay where they belong.

An untrusted net, solver, weights or snapshot file may be refused, but reading it
never runs anything: each attack here would create a marker file if it ran, and
the marker must not exist afterwards.
"""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import sys
import uuid
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from netcfg.errors import NetcfgError
from netcfg.solver.checkpoint import CheckpointError, save_tree
from netcfg.solver.weights_file import load_weights
from tests.reliability import ROOT, TINY_NET, netcfg, tree, write_tiny_solver


class Pwned:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ------------------------------------------------------------ no pickle, by construction

BANNED_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
# import_module calls that import what the user named (plugins) rather than netcfg's own modules
PLUGIN_SITES = {"netcfg/net/spec.py", "netcfg/cli/plugins.py"}


def _own_module(arg: ast.expr) -> bool:
    """An import_module argument that can only name a netcfg module."""
    if isinstance(arg, ast.Constant):
        return str(arg.value).startswith("netcfg")
    if isinstance(arg, ast.JoinedStr) and arg.values:
        head = arg.values[0]
        return (isinstance(head, ast.Constant) and str(head.value).startswith("netcfg.")) or (
            isinstance(head, ast.FormattedValue) and isinstance(head.value, ast.Name) and head.value.id == "__name__")
    return isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name) and arg.value.id == "_API"


def _problems(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    out = []
    for node in ast.walk(ast.parse(path.read_text(), rel)):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            out += [f"{where}: imports {a.name}" for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in BANNED_MODULES:
            out.append(f"{where}: imports from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in ("Loader", "UnsafeLoader", "FullLoader", "unsafe_load",
                                                              "full_load", "load_all", "unsafe_load_all"):
            if isinstance(node.value, ast.Name) and node.value.id == "yaml":
                out.append(f"{where}: yaml.{node.attr}")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            kw = {k.arg: k.value for k in node.keywords}
            if isinstance(f, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
                out.append(f"{where}: {name}()")
            elif (owner, name) == ("yaml", "load"):
                out.append(f"{where}: yaml.load (use yaml.safe_load)")
            elif (owner, name) == ("torch", "load"):
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    out.append(f"{where}: torch.load without weights_only=True")
            elif owner in ("np", "numpy") and name == "load":
                if not (isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False):
                    out.append(f"{where}: np.load without allow_pickle=False")
            elif name == "import_module" and rel not in PLUGIN_SITES and not (node.args and _own_module(node.args[0])):
                out.append(f"{where}: import_module of a name netcfg does not own")
    return out


def test_netcfg_reads_no_pickle_and_runs_no_code_from_files():
    """Every module of the package: no pickle, no unsafe YAML, torch.load only with weights_only=True,
    np.load only with allow_pickle=False, no eval/exec, imports of user modules only at the plugin sites."""
    files = sorted((ROOT / "netcfg").rglob("*.py"))
    assert len(files) > 30
    problems = [p for f in files for p in _problems(f)]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------ weights files


def _malicious(path: Path, marker: Path, how: str) -> Path:
    if how == "torch.save":
        torch.save({"ip1.weight": torch.ones(16, 64), "x": Pwned(marker)}, path)
    else:  # a bare pickle, as old tools wrote them
        path.write_bytes(pickle.dumps({"ip1.weight": Pwned(marker)}, protocol=2))
    return path


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_malicious_pickle_is_refused_without_running(tmp_path, suffix, how):
    marker = tmp_path / "pwned"
    path = _malicious(tmp_path / f"weights{suffix}", marker, how)
    with pytest.raises(CheckpointError, match="refused: this pickle") as e:
        load_weights(path)
    assert "posix.system" in str(e.value) or "Python objects other than tensors" in str(e.value)
    assert not marker.exists()


def test_no_command_runs_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    solver = write_tiny_solver(tmp_path, data={
        "train": {"source": "digits", "split": "train", "batch_size": 32, "limit": 64},
        "test": {"source": "digits", "split": "test", "batch_size": 32, "limit": 64}})
    weights = _malicious(tmp_path / "w.pt", marker, "torch.save")
    for args in (["train", solver, "--weights", weights, "--out", tmp_path / "run"],
                 ["test", solver, "--weights", weights]):
        code, out, err = netcfg(*args)
        assert code == 2 and "Traceback" not in err
        # train's --weights is its solver's weights: key; test's an option of its own
        prefix = f"--weights: error: weights: {weights}: " if args[0] == "train" else f"{weights}: error: "
        assert err.startswith(prefix + "refused: this pickle calls posix.system"), err
        assert not marker.exists() and not (tmp_path / "run").exists()
    # disguised as a snapshot or as safetensors, it is not even unpickled
    for name in ("tiny_iter_1.solverstate", "w.safetensors"):
        disguised = tmp_path / name
        shutil.copy(weights, disguised)
        code, out, err = netcfg("train", solver, "--resume" if "solverstate" in name else "--weights", disguised)
        prefix = f"{disguised}: error: " if "solverstate" in name else f"--weights: error: weights: {disguised}: "
        assert code == 2 and err.startswith(prefix + "not a ") and not marker.exists(), err


@pytest.mark.parametrize("layout", ["state_dict", "lightning", "ddp"])
def test_a_torch_state_dict_initialises_a_net(tmp_path, layout):
    solver = write_tiny_solver(tmp_path, max_iter=6, snapshot=0)
    code, out, err = netcfg("train", solver, "--out", tmp_path / "a")
    assert code == 0, err
    trained = load_file(tmp_path / "a/tiny_iter_6.safetensors")
    state = {"state_dict": trained, "epoch": 3} if layout == "lightning" else trained
    if layout == "ddp":
        state = {f"module.{k}": v for k, v in trained.items()}
    torch.save(state, tmp_path / "w.pt")
    code, out, err = netcfg("train", solver, "--weights", tmp_path / "w.pt", "--set", "max_iter=0",
                            "--out", tmp_path / "b")
    assert code == 0, err
    assert f"weights from {(tmp_path / 'w.pt').resolve()}: 4 blobs copied" in out
    again = load_file(tmp_path / "b/tiny_iter_0.safetensors")
    assert all(torch.equal(again[k], trained[k]) for k in trained)


# ------------------------------------------------------------ YAML


TAGS = ["!!python/object/apply:os.system ['touch {m}']", "!!python/object/new:os.system ['touch {m}']",
        "!!python/name:os.system ''", "!!python/module:os ''", "!include {m}"]


@pytest.mark.parametrize("tag", TAGS)
def test_a_yaml_tag_is_a_located_error_and_runs_nothing(tmp_path, tag):
    marker = tmp_path / "pwned"
    value = tag.format(m=marker)
    (tmp_path / "net.yaml").write_text(TINY_NET.replace("num_output: 16", f"num_output: {value}"))
    solver = write_tiny_solver(tmp_path)
    (tmp_path / "net.yaml").write_text(TINY_NET.replace("num_output: 16", f"num_output: {value}"))
    for args in (["check", tmp_path / "net.yaml"], ["train", solver, "--out", tmp_path / "run"],
                 ["check", write_tiny_solver(tmp_path / "s")] + ["--set", f"base_lr={value}"]):
        code, out, err = netcfg(*args)
        assert code == 2 and "Traceback" not in err
        assert f"tag '{value.split()[0]}' is not allowed" in err
        assert err.startswith((f"{tmp_path / 'net.yaml'}:6:49: error: layers[0].num_output: tag", "--set base_lr="))
        assert not marker.exists() and not (tmp_path / "run").exists()


# ------------------------------------------------------------ plugins


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module on the path whose import creates a marker file: (name, marker)."""
    name = f"netcfg_test_plugin_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    yield name, marker
    sys.modules.pop(name, None)


def test_a_plugin_runs_only_when_a_net_file_names_it(tmp_path, plugin):
    name, marker = plugin
    (tmp_path / "net.yaml").write_text(TINY_NET)
    assert netcfg("check", tmp_path / "net.yaml")[0] == 0
    assert not marker.exists()  # on the path, but not named: not imported
    (tmp_path / "net.yaml").write_text(TINY_NET + f"plugins: [{name}]\n")
    assert netcfg("check", tmp_path / "net.yaml")[0] == 0
    assert marker.exists()


@pytest.mark.parametrize("command", ["check", "train", "test"])
def test_a_plugin_runs_when_the_command_line_names_it(tmp_path, plugin, command):
    name, marker = plugin
    solver = write_tiny_solver(tmp_path, max_iter=1, data={
        "train": {"source": "digits", "split": "train", "batch_size": 32, "limit": 64},
        "test": {"source": "digits", "split": "test", "batch_size": 32, "limit": 64}})
    args = {"check": [], "train": ["--out", tmp_path / "run"], "test": ["--weights", tmp_path / "none.safetensors"]}
    netcfg(command, solver, *args[command])
    assert not marker.exists()
    netcfg(command, solver, "--plugin", name, *args[command])
    assert marker.exists()


# ------------------------------------------------------------ paths


def test_paths_in_files_resolve_against_the_file_not_the_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project" / "solvers"
    solver = write_tiny_solver(project, max_iter=2, snapshot=0)
    code, out, err = netcfg("train", solver, "--out", tmp_path / "first")
    assert code == 0, err
    shutil.copy(tmp_path / "first/tiny_iter_2.safetensors", project / "start.safetensors")
    text = solver.read_text() + "weights: start.safetensors\n"  # relative: next to the solver file
    solver.write_text(text)
    for cwd in (tmp_path, project, ROOT):
        monkeypatch.chdir(cwd)
        code, out, err = netcfg("check", os.path.relpath(solver, cwd))
        assert code == 0, err
        code, out, err = netcfg("train", os.path.relpath(solver, cwd), "--set", "max_iter=0",
                                "--out", tmp_path / f"run-{cwd.name}")
        assert code == 0, err
        assert f"weights from {project / 'start.safetensors'}: 4 blobs copied" in out


def test_snapshots_stay_inside_the_run_directory(tmp_path):
    escape = TINY_NET.replace("name: Tiny", "name: ../../escaped")
    solver = write_tiny_solver(tmp_path, max_iter=1, snapshot=0)
    (tmp_path / "net.yaml").write_text(escape)
    solver.write_text(solver.read_text().replace("snapshot_prefix: tiny\n", ""))  # the net's name is the prefix
    (tmp_path / "deep/er").mkdir(parents=True)
    code, out, err = netcfg("train", solver, "--out", tmp_path / "deep/er/run")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "deep/er/run").iterdir() if "iter" in p.name) == [
        "_.._escaped_iter_1.safetensors", "_.._escaped_iter_1.solverstate"]
    assert not list(tmp_path.glob("escaped*")) and not list((tmp_path / "deep").glob("escaped*"))
    # a prefix with dots keeps every iteration's files apart
    code, out, err = netcfg("train", write_tiny_solver(tmp_path / "dots", max_iter=2, snapshot=1,
                                                       snapshot_prefix="tiny.v2"), "--out", tmp_path / "dots/run")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "dots/run").iterdir() if "iter" in p.name) == [
        "tiny.v2_iter_1.safetensors", "tiny.v2_iter_1.solverstate",
        "tiny.v2_iter_2.safetensors", "tiny.v2_iter_2.solverstate"]


def test_a_state_file_cannot_point_at_weights_elsewhere(tmp_path):
    solver = write_tiny_solver(tmp_path, max_iter=2, snapshot=0)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    state = tmp_path / "run/tiny_iter_2.solverstate"
    with safetensors.safe_open(str(state), framework="pt") as f:
        meta = f.metadata()
    meta["weights"] = "../../../../etc/passwd"
    tensors = safetensors.torch.load(state.read_bytes())
    state.write_bytes(safetensors.torch.save(tensors, metadata=meta))
    code, out, err = netcfg("train", solver, "--resume", state)
    assert code == 2 and "Traceback" not in err
    assert err == (f"{state}: error: names its weights file '../../../../etc/passwd', which is not a file "
                   "name beside it\n")


@pytest.mark.parametrize("tree_, problem", [
    ({"iter": "seven"}, "'iter' is not an iteration number"),
    ({"iter": 3, "optimizer": [], "rng": {}, "losses": []}, "'optimizer' is not an optimizer state"),
    ({"iter": 3, "optimizer": {"state": {}, "param_groups": []}, "rng": {"torch": torch.zeros(3)}, "losses": []},
     "'rng' is not a random-number generator state"),
])
def test_a_state_file_with_foreign_contents_is_refused(tmp_path, tree_, problem):
    solver = write_tiny_solver(tmp_path, max_iter=2, snapshot=0)
    assert netcfg("train", solver, "--out", tmp_path / "run")[0] == 0
    state = tmp_path / "run/tiny_iter_2.solverstate"
    save_tree(state, tree_, metadata={"weights": "tiny_iter_2.safetensors"})
    before = tree(tmp_path / "run")
    code, out, err = netcfg("train", solver, "--resume", state)
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"{state}: error: is not a netcfg solver state: ") and problem in err
    assert tree(tmp_path / "run") == before


def test_render_of_every_file_error_names_the_file(tmp_path):
    with pytest.raises(NetcfgError) as e:
        load_weights(tmp_path / "missing.pt")
    assert e.value.render() == f"{tmp_path / 'missing.pt'}: error: weights file not found"
