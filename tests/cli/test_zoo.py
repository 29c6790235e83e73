"""``netcfg zoo``: the listing from the headers, one net's header and solvers, typos, a missing zoo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from netcfg import zoo
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_lists_every_net_with_its_header_parameter_count_and_inputs():
    result = run_cli("zoo")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "parameters", "inputs", "description"]
    table = lines[2:lines.index("")]
    rows = {line.split()[0]: line for line in table}
    configs = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert list(rows) == configs
    assert "138,357,544" in rows["vgg16"] and "data 3x224x224, label int64" in rows["vgg16"]
    assert "431,080" in rows["lenet"] and "data 1x28x28" in rows["lenet"]
    assert "tokens 64 int64" in rows["text_cnn"]
    assert rows["resnet18"].endswith("The 18-layer residual net with basic blocks")
    assert lines[-1].startswith(f"{len(configs)} nets in ")


def test_one_net_prints_its_header_path_and_solvers():
    result = run_cli("zoo", "lenet")
    assert result.exit_code == 0, result.stderr
    header = "".join(line[2:] + "\n" for line in (ROOT / "configs/lenet.yaml").read_text().splitlines()
                     if line.startswith("# "))
    assert result.stdout.startswith(header)
    assert "lenet.yaml" in result.stdout
    assert "solvers/lenet_fashion_mnist.yaml" in result.stdout
    assert "netcfg train " in result.stdout


def test_a_net_without_solvers_says_so():
    result = run_cli("zoo", "resnet50")
    assert result.exit_code == 0, result.stderr
    assert "Parameters: 25,557,032" in result.stdout
    assert "solvers:  none" in result.stdout


def test_unknown_name_exits_2_with_did_you_mean():
    result = run_cli("zoo", "resnt18")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("netcfg zoo: error: no net 'resnt18' in the zoo")
    assert "(did you mean 'resnet18'?" in result.stderr


def test_missing_zoo_directory_is_explained(tmp_path, monkeypatch):
    import netcfg.zoo

    monkeypatch.setattr(netcfg.zoo, "default_zoo_dir", lambda: tmp_path / "configs")  # a non-editable install
    result = run_cli("zoo")
    assert (result.exit_code, result.stdout) == (2, "")
    assert "no model zoo at" in result.stderr and "pip install -e ." in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("zoo", "--dir", str(tmp_path / "mine"))  # the user's own folder: no install advice
    assert result.exit_code == 2 and result.stderr.startswith(f"netcfg zoo: error: --dir {tmp_path / 'mine'} is not")


def test_own_folder_with_dir_finds_nets_by_file_or_net_name_and_their_solvers(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "solvers").mkdir()
    (tmp_path / "configs/tiny.yaml").write_text(
        "# Tiny: a one-layer classifier. Not trained here.\n# Parameters: 650.\n"
        "name: TinyNet\ninputs: {data: [64], label: {shape: [], dtype: int64}}\n"
        "layers:\n  - {name: ip, type: InnerProduct, num_output: 10}\n"
        "  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}\n")
    (tmp_path / "solvers/tiny_run.yaml").write_text("net: ../configs/tiny.yaml\nbase_lr: 0.1\nmax_iter: 1\n")
    (tmp_path / "solvers/other.yaml").write_text("net: ../configs/other.yaml\n")
    listing = run_cli("zoo", "--dir", str(tmp_path / "configs"))
    assert listing.exit_code == 0, listing.stderr
    assert "tiny         650  data 64, label int64  A one-layer classifier" in listing.stdout
    shown = run_cli("zoo", "TinyNet", "--dir", str(tmp_path / "configs"))
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout.startswith("Tiny: a one-layer classifier.")
    assert "tiny_run.yaml" in shown.stdout and "other.yaml" not in shown.stdout


def test_listing_reads_headers_without_loading_torch():
    # what keeps `netcfg zoo` instant: no net is built, torch is never imported
    code = ("import sys; from netcfg.cli.app import main\n"
            "try: main(['zoo'])\nexcept SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(zoo.zoo_entries()) + 4


def test_solver_files_in_the_folder_are_not_listed_as_nets(tmp_path):
    """`netcfg zoo --dir solvers` listed every solver as a net with '?' parameters, no
    inputs and its header's path ('Configs/autoencoder.yaml') as the description."""
    listing = run_cli("zoo", "--dir", str(ROOT / "solvers"))
    assert listing.exit_code == 0, listing.stderr
    assert listing.stdout.splitlines()[2:3] == [""]  # the table has no rows
    n = len(list((ROOT / "solvers").glob("*.yaml")))
    assert "\n0 nets in " in listing.stdout and f"({n} solver files left out)" in listing.stdout
    (tmp_path / "lenet.yaml").write_text((ROOT / "configs" / "lenet.yaml").read_text())
    (tmp_path / "run.yaml").write_text("net: lenet.yaml\nbase_lr: 0.1\nmax_iter: 1\n")
    mixed = run_cli("zoo", "--dir", str(tmp_path))
    rows = mixed.stdout.split("\n\n")[0].splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["lenet"]
    assert "(1 solver file left out)" in mixed.stdout


def test_an_unreadable_file_is_left_out_with_a_note_and_the_rest_listed(tmp_path):
    """One non-UTF-8 .yaml in `zoo --dir` stopped the whole listing (exit 2, no table);
    and the footer said '1 nets'."""
    (tmp_path / "lenet.yaml").write_text((ROOT / "configs" / "lenet.yaml").read_text())
    (tmp_path / "bad.yaml").write_bytes(b"name: \xff\xfe net\nlayers: []\n")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    listing = run_cli("zoo", "--dir", str(tmp_path))
    assert listing.exit_code == 0, listing.stderr
    rows = listing.stdout.split("\n\n")[0].splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["lenet"]
    assert "\n1 net in " in listing.stdout and "(2 unreadable files left out)" in listing.stdout
    assert listing.stderr.splitlines() == [
        f"{tmp_path / 'bad.yaml'}:1:7: note: left out of the listing: byte 0xff is not UTF-8 text "
        "(is this a YAML file? save it as UTF-8)",
        f"{tmp_path / 'broken.yaml'}:2:1: note: left out of the listing: YAML syntax: expected ',' or ']', but got "
        "'<stream end>'; the '[' at line 1, column 7 is not closed (add the missing ']')"]
    shown = run_cli("zoo", "LeNet", "--dir", str(tmp_path))  # by the net's name: the broken files are passed over
    assert shown.exit_code == 0 and shown.stdout.startswith("LeNet: Caffe's MNIST LeNet"), shown.stderr
    named = run_cli("zoo", "bad", "--dir", str(tmp_path))  # named by its file: why it cannot be shown
    assert named.exit_code == 2 and "byte 0xff is not UTF-8 text" in named.stderr


def test_a_folder_of_yml_files_is_a_zoo_too(tmp_path):
    # --dir of nets saved as .yml listed '0 nets', and 'netcfg zoo NAME' said 'known: ' (nothing)
    nets, solvers = tmp_path / "configs", tmp_path / "solvers"
    nets.mkdir(), solvers.mkdir()
    (nets / "mine.yml").write_text((ROOT / "configs/lenet.yaml").read_text())
    (solvers / "train_mine.yml").write_text("net: ../configs/mine.yml\n")
    listed = run_cli("zoo", "--dir", str(nets))
    assert listed.exit_code == 0, listed.stderr
    assert listed.stdout.splitlines()[2].split()[:2] == ["mine", "431,080"]
    for name in ("mine", "mine.yml", "LeNet"):
        shown = run_cli("zoo", name, "--dir", str(nets))
        assert shown.exit_code == 0, shown.stderr
        assert str(solvers / "train_mine.yml") in shown.stdout
