"""Property-based fuzzing of the loaders: a mutated zoo file is a valid net or a NetcfgError, never a crash.

Every file in configs/ and solvers/ is mutated (a key deleted or renamed, a value's
type swapped, a value replaced by a random scalar, the text truncated, random
bytes written in) and loaded the way ``netcfg check`` loads it: YAML, schema,
graph in both phases, and for a solver its data. Whatever loads and is small
enough is also built and run forward on a batch of two. A real ``.solverstate``
is damaged the same ways (its JSON tree, its solver config, the weights file it
names, its bytes) and resumed; what resumes must train on. Anything but success
or a NetcfgError fails, as does an example slower than the deadline (a hang).

A few hundred cases by default, always the same ones; many more on demand, new
ones each run:

    NETCFG_FUZZ_EXAMPLES=20000 pytest tests/reliability/test_fuzz.py
"""

from __future__ import annotations

import copy
import json
import os
import signal
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcfg.errors import NetcfgError
from netcfg.net import Net, build_graph
from netcfg.net.spec import net_from_source
from netcfg.solver import Solver
from netcfg.solver.check import check_solver
from netcfg.solver.memory import estimate
from netcfg.solver.spec import solver_from_source
from netcfg.source import parse_yaml
from tests.reliability import ROOT, write_tiny_solver

NETS = sorted((ROOT / "configs").glob("*.yaml"))
SOLVERS = sorted((ROOT / "solvers").glob("*.yaml"))
ON_DEMAND = "NETCFG_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("NETCFG_FUZZ_EXAMPLES", "150"))
HANG = 60  # seconds: an example still running then is a hang, whatever the machine's load
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=10), derandomize=not ON_DEMAND, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, -1, 1, 2, 3, 7, 2**31, 2**63, -(2**63), 10**12]),
    st.integers(-1000, 1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "TRAIN", "TEST", "MAX", "data", "label", "auto", "xavier", "[", "{", "*x", "&a", "~"]),
)


def _paths(node, prefix=()):
    """Every key path into a plain YAML document."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _retype(value):
    """The same content in another YAML type."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return [value] if isinstance(value, int) else str(value)
    if isinstance(value, str):
        return {value: value} if len(value) % 2 else [value]
    if isinstance(value, list):
        return value[0] if value else {}
    if isinstance(value, dict):
        return list(value.values())
    return "null"


def structured(doc):
    """1-3 edits of the parsed document, dumped back to YAML."""
    return edits(doc).map(lambda d: yaml.safe_dump(d, sort_keys=False, allow_unicode=True).encode())


@st.composite
def edits(draw, doc):
    """1-3 edits of a plain document: a key deleted or renamed, a type swapped, a random scalar."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1]
        kind = draw(st.sampled_from(["delete", "retype", "scalar", "rename", "duplicate"]))
        if kind == "delete":
            del parent[key]
        elif kind == "retype":
            parent[key] = _retype(parent[key])
        elif kind == "scalar":
            parent[key] = draw(SCALARS)
        elif kind == "rename" and isinstance(parent, dict):
            new = draw(st.text(min_size=1, max_size=10).filter(lambda k: k != "plugins"))
            parent[new] = parent.pop(key)
        elif kind == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
    return doc


@st.composite
def textual(draw, raw: bytes):
    """The file's bytes truncated, overwritten or with bytes inserted."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert"]))
    at = draw(st.integers(0, len(raw)))
    if kind == "truncate":
        return raw[:at]
    junk = draw(st.one_of(st.binary(min_size=1, max_size=8),
                          st.sampled_from([b"\t", b":", b"- ", b"{", b"]", b"&a ", b"*a", b"!!python/name:os.system ",
                                           b"<<: ", b"\n  ", b"'", b"\xff"])))
    return raw[:at] + junk + raw[at + (len(junk) if kind == "overwrite" else 0):]


def mutations(files: list[Path]):
    originals = [(f, f.read_bytes()) for f in files]
    return st.sampled_from(originals).flatmap(lambda fr: st.tuples(
        st.just(fr[0]), st.one_of(structured(yaml.safe_load(fr[1])), textual(fr[1]))))


@contextmanager
def hang_guard(seconds: int = HANG):
    """Fail an example that runs for ``seconds`` instead of waiting for it forever."""
    def stop(signum, frame):
        raise TimeoutError(f"the loader ran for {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _run_small(graph) -> None:
    """Build and run forward what is cheap to: a wrong shape inference fails here."""
    if graph.total_params > 3_000_000 or estimate(graph, 2, train=False).per_sample > 8 * 2**20:
        return
    net = Net(graph)
    inputs = {name: torch.zeros((2, *b.shape), dtype=getattr(torch, b.dtype)) for name, b in graph.inputs.items()}
    with torch.no_grad():
        net.eval() if graph.phase == "TEST" else net.train()
        net(**inputs)


def load_net_bytes(raw: bytes, name: str) -> None:
    src = parse_yaml(_decode(raw, name), name)
    spec = net_from_source(src)
    for phase in ("TRAIN", "TEST"):
        _run_small(build_graph(spec, phase))


def load_solver_bytes(raw: bytes, name: str) -> None:
    src = parse_yaml(_decode(raw, name), name)
    spec = solver_from_source(src, ROOT / "solvers")  # its net: and data paths resolve as the file's would
    for graph in check_solver(spec).values():
        _run_small(graph)


def _decode(raw: bytes, name: str) -> str:
    # what load_yaml does with bytes that are not UTF-8, without a file on disk
    from netcfg.errors import ConfigError

    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"byte 0x{raw[e.start]:02x} is not UTF-8 text", file=name, line=1, col=1) from None


def test_the_zoo_loads_unmutated():
    """The starting points are valid (so a mutation is what breaks them); warms the data caches."""
    assert NETS and SOLVERS
    for f in NETS:
        load_net_bytes(f.read_bytes(), f.name)
    for f in SOLVERS:
        try:
            load_solver_bytes(f.read_bytes(), f.name)
        except NetcfgError as e:  # a data set this machine lacks (Fashion-MNIST): still no crash
            assert "does not exist" in str(e) or "no such" in str(e).lower(), e.render()


@FUZZ
@given(mutations(NETS))
def test_mutated_net_files_load_or_fail_cleanly(case):
    path, raw = case
    with hang_guard():
        try:
            load_net_bytes(raw, f"configs/{path.name}")
        except NetcfgError as e:
            assert e.render().strip()


@FUZZ
@given(mutations(SOLVERS))
def test_mutated_solver_files_load_or_fail_cleanly(case):
    path, raw = case
    with hang_guard():
        try:
            load_solver_bytes(raw, f"solvers/{path.name}")
        except NetcfgError as e:
            assert e.render().strip()


@pytest.mark.parametrize("bad", [b"", b"\xff\xfe", b"a: [", b"- 1\n- 2\n", b"&a [*a]", b"x: !!binary AAAA\n"])
def test_degenerate_files(bad):
    for load in (load_net_bytes, load_solver_bytes):
        with pytest.raises(NetcfgError):
            load(bad, "degenerate.yaml")


# ------------------------------------------------------------ solver states


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A real snapshot to mutate, and a Solver of the same config to restore it into."""
    base = tmp_path_factory.mktemp("state")
    solver_file = write_tiny_solver(base, max_iter=3, snapshot=0)
    first = Solver.from_file(solver_file, out=base / "run", log=lambda line: None)
    first.solve()
    first.run.close()
    state = base / "run/tiny_iter_3.solverstate"
    raw = state.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + size])["__metadata__"]
    restorer = Solver.from_file(solver_file, out=base / "restorer", log=lambda line: None)
    return state, raw, safetensors.torch.load(raw), meta, restorer


@st.composite
def state_mutations(draw, raw: bytes, tensors: dict, meta: dict):
    kind = draw(st.sampled_from(["tree", "solver", "weights", "bytes"]))
    if kind == "bytes":
        return draw(textual(raw))
    meta = dict(meta)
    if kind == "tree":
        meta["netcfg.tree"] = json.dumps(draw(edits(json.loads(meta["netcfg.tree"]))))
    elif kind == "solver":
        meta["solver"] = draw(structured(yaml.safe_load(meta["solver"]))).decode()
    else:
        meta["weights"] = draw(st.one_of(st.text(max_size=20), st.sampled_from(["", ".", "..", "/", "a/b", "\\x"])))
    return safetensors.torch.save(tensors, metadata=meta)


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 10))
@given(data=st.data())
def test_mutated_solver_states_resume_or_fail_cleanly(snapshot, data):
    """A damaged .solverstate is refused with a NetcfgError, or resumes and trains on."""
    state, raw, tensors, meta, restorer = snapshot
    state.write_bytes(data.draw(state_mutations(raw, tensors, meta)))
    with hang_guard():
        try:
            restorer.restore(state, force=data.draw(st.booleans()))
        except NetcfgError as e:
            assert e.render().strip()
            return
        restorer.step(1)
