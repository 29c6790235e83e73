"""``netcfg --help`` without importing torch (its time is measured by bench/startup.py, not here)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
from netcfg.cli.app import main
try:
    main(["--help"])
except SystemExit as e:
    assert e.code in (0, None), e.code
heavy = sorted(m for m in ("torch", "numpy", "pydantic", "netcfg.layers", "netcfg.net") if m in sys.modules)
assert not heavy, f"--help imported {heavy}"
"""


def test_help_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("check", "train", "test", "schema", "layers"):
        assert command in proc.stdout


CHECK_PROBE = """
import sys
from netcfg.net import build_graph
from netcfg.net.spec import net_from_source
from netcfg.source import parse_yaml
build_graph(net_from_source(parse_yaml(open("configs/lenet.yaml").read())))
build_graph(net_from_source(parse_yaml(
    "name: t\\ninputs: {x: [2, 7, 6]}\\nlayers:\\n  - {name: p, type: Pooling, pool: AVE, kernel_size: 3, stride: 2}\\n")))
assert "torch._dynamo" not in sys.modules, "checking a net imported torch._dynamo"
"""


def test_checking_a_net_does_not_import_torch_dynamo():
    # a tensor product in Pooling's set-up (its AVE divisors) imported torch._dynamo when a graph
    # check built the layer: `netcfg check configs/resnet50.yaml` took 2.8 s, not 1.7 s
    proc = subprocess.run([sys.executable, "-c", CHECK_PROBE], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr


# The console entry (netcfg.__main__.main) with a signal sent while one module loads:
# argv is MODULE SIGNAL BROKEN COMMAND...; BROKEN=1 turns the KeyboardInterrupt into the
# ImportError numpy raises when Ctrl-C stops its C extension half way
SIGNAL_WHILE_LOADING = """
import builtins, os, signal, sys, time
module, signame, broken, argv = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
real_import = builtins.__import__

def load(name, *args, **kwargs):
    if name == module:
        builtins.__import__ = real_import
        try:
            os.kill(os.getpid(), getattr(signal, signame))
            time.sleep(5)
        except KeyboardInterrupt:
            if not broken:
                raise
            raise ImportError("cannot load module more than once per process") from None
    return real_import(name, *args, **kwargs)

builtins.__import__ = load
from netcfg.__main__ import main
main(argv)
"""


@pytest.mark.parametrize("module, signame, broken, code", [
    ("typer", "SIGINT", False, 130),   # while the command line's parser loads
    ("typer", "SIGTERM", False, 143),
    ("torch", "SIGINT", True, 130),    # while the command imports torch, which breaks
    ("torch", "SIGTERM", True, 143),
])
def test_a_signal_while_netcfg_loads_stops_it_with_one_line(module, signame, broken, code):
    proc = subprocess.run([sys.executable, "-c", SIGNAL_WHILE_LOADING, module, signame, str(int(broken)),
                           "check", "configs/lenet.yaml"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2],
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    by = "Ctrl-C" if signame == "SIGINT" else "SIGTERM"
    assert (proc.returncode, proc.stderr) == (code, f"interrupted ({by})\n")


def test_an_error_with_no_signal_is_not_taken_for_one():
    from netcfg.stop import exits_when_stopped, signals_stop

    with pytest.raises(ImportError), signals_stop(), exits_when_stopped():
        raise ImportError("a real one")


def test_usage_lines_name_their_arguments_once():
    from tests.cli import run_cli

    for command, usage in (("layers", "[TYPE]"), ("zoo", "[NAME]")):
        result = run_cli(command, "--help")
        line = next(x for x in result.stdout.splitlines() if "Usage:" in x)
        assert line.split()[-1] == usage, line  # was [[TYPE]]: the metavar carried its own brackets
    result = run_cli("check", "--help")
    assert "solver file" in result.stdout.split("Arguments")[1].split("Options")[0]  # not just "net file"


def test_help_paragraphs_are_wrapped_by_the_terminal_not_the_source(monkeypatch):
    # typer 0.2x keeps a docstring's line breaks after its first paragraph: at 200 columns the
    # sentence came out as "... it" / "trains" / "with DistributedDataParallel, ..."
    from tests.cli import run_cli

    monkeypatch.setenv("COLUMNS", "200")
    lines = [x.strip() for x in run_cli("train", "--help").stdout.splitlines()]
    assert any(x.startswith("Under torchrun") and x.endswith("see docs/distributed.md.") for x in lines), lines
    fetch = [x.strip() for x in run_cli("data", "fetch", "--help").stdout.splitlines()]
    assert any(x.startswith("Files already there") and x.endswith("the solver snippet to stdout.") for x in fetch)


def test_help_keeps_square_brackets_that_rich_would_read_as_markup(monkeypatch):
    # typer parses help as rich markup: "pip install 'netcfg[plot]'" printed as 'netcfg'
    from tests.cli import run_cli

    monkeypatch.setenv("COLUMNS", "200")
    for command in ("plot", "landscape"):
        assert "pip install 'netcfg[plot]'" in run_cli(command, "--help").stdout, command


def test_a_path_option_with_a_tilde_means_the_home_folder(tmp_path, monkeypatch):
    # the shell leaves ~ alone after '=' (--out=~/runs/x) and in quotes: train made a folder
    # named '~' in the working directory, and --weights=~/w.safetensors was 'not found: ./~/...'
    from tests.cli import netcfg

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    code, _, err = netcfg("schema", "net", "--output=~/schemas/net.json")
    assert code == 0, err
    assert (home / "schemas/net.json").is_file() and not (work / "~").exists()
    code, out, err = netcfg("draw", "~/nothing.yaml")  # an argument, as a quoted '~/x' reaches it
    assert (code, err) == (2, f"{home / 'nothing.yaml'}: error: no such file\n")


@pytest.mark.parametrize("args", [["layers"], ["zoo"], ["--help"], ["data", "fetch", "--help"],
                                  ["check", "configs/lenet.yaml"]])
def test_a_reader_that_went_stops_the_command_quietly_with_141(args):
    # `netcfg layers | head -3`, `netcfg zoo | head -1`: click exited 1 (rich's --help too), as if the
    # command had failed; now the exit status of `git log | head`, with nothing on stderr
    proc = subprocess.Popen([sys.executable, "-m", "netcfg", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    proc.stdout.close()  # as head does once it has its lines (before the first here: no race)
    err = proc.stderr.read()
    assert (proc.wait(timeout=60), err) == (141, "")


def test_a_broken_pipe_of_another_is_a_bug_shown(monkeypatch):
    # only stdout's or stderr's reader going is quiet: any other broken pipe is a traceback (click
    # took every broken pipe for stdout's and exited 1 in silence)
    from tests.cli import netcfg

    def broken(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("netcfg.layers._registry.registry", broken)
    with pytest.raises(RuntimeError, match="a pipe other than stdout's or stderr's broke") as e:
        netcfg("layers")
    assert isinstance(e.value.__cause__, BrokenPipeError)
