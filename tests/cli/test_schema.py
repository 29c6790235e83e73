"""``netcfg schema``: the JSON Schema of net files, built from the layer registry."""

from __future__ import annotations

import json

from netcfg.layers._registry import registry
from tests.cli import run_cli
from tests.reliability import ROOT


def _layer_union(doc: dict) -> set[str]:
    """The layer types the schema's ``Layer`` union accepts, read off each branch."""
    defs = doc["$defs"]
    types = set()
    for branch in defs["Layer"]["oneOf"]:
        target = defs[branch["$ref"].removeprefix("#/$defs/")]
        types.add(target["properties"]["type"]["const"])
    return types


def test_net_schema_covers_every_registered_type():
    result = run_cli("schema", "net")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["$schema"].startswith("https://json-schema.org/")
    assert {"name", "inputs", "layers"} <= set(doc["properties"])
    assert doc["properties"]["layers"]["items"] == {"anyOf": [{"$ref": "#/$defs/Layer"}, {"$ref": "#/$defs/BlockUse"}]}
    assert _layer_union(doc) == set(registry())
    assert set(doc["$defs"]["Layer"]["discriminator"]["mapping"]) == set(registry())


def test_schema_to_file(tmp_path):
    out = tmp_path / "net.schema.json"
    result = run_cli("schema", "net", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert _layer_union(json.loads(out.read_text())) == set(registry())
    assert result.stdout == "" and result.stderr == f"wrote {out}\n"  # as the other commands: stdout stays clean


def test_schema_does_not_overwrite_a_file_without_force(tmp_path):
    """schema -o used to replace any file, a net .yaml included, without asking."""
    net = tmp_path / "lenet.yaml"
    net.write_text((ROOT / "configs/lenet.yaml").read_text())
    result = run_cli("schema", "net", "-o", str(net))
    assert result.exit_code == 2
    assert result.stderr == (f"--output: error: {net} already exists "
                             "(pass --force to overwrite it, or choose another -o)\n")
    assert net.read_text() == (ROOT / "configs/lenet.yaml").read_text()
    result = run_cli("schema", "solver", "-o", str(net), "--force")
    assert result.exit_code == 0, result.stderr
    assert "base_lr" in json.loads(net.read_text())["properties"]


def test_unknown_schema_exits_2():
    result = run_cli("schema", "nett")
    assert result.exit_code == 2
    assert result.stderr == "netcfg schema: error: unknown schema 'nett' (valid: net, solver)\n"


def test_an_output_that_cannot_be_written_is_an_error_and_expand_never_writes_over_its_net(tmp_path):
    result = run_cli("schema", "net", "-o", str(tmp_path))
    assert result.exit_code == 2 and f"--output: error: cannot write {tmp_path}: Is a directory" in result.stderr
    result = run_cli("schema", "net", "-o", str(tmp_path / "new/dir/net.json"))  # folders are made
    assert result.exit_code == 0 and json.loads((tmp_path / "new/dir/net.json").read_text())
    net = tmp_path / "resnet20.yaml"
    net.write_text((ROOT / "configs/resnet20.yaml").read_text())
    result = run_cli("expand", str(net), "-o", str(net))
    assert result.exit_code == 2 and "is the file being read: writing it would destroy it" in result.stderr
    assert net.read_text() == (ROOT / "configs/resnet20.yaml").read_text()


def test_an_output_below_a_file_says_not_a_directory(tmp_path):
    # mkdir's 'File exists' read as if the output were there already, with a file in the folder's place
    (tmp_path / "notes").write_text("mine")
    result = run_cli("schema", "net", "-o", str(tmp_path / "notes/net.json"))
    assert (result.exit_code, result.stderr) == (2, f"--output: error: cannot write {tmp_path / 'notes/net.json'}: "
                                                    "Not a directory (choose a file in a folder you can write)\n")
    assert (tmp_path / "notes").read_text() == "mine"


def test_an_output_on_a_read_only_mount_says_so(tmp_path, monkeypatch):
    # it said 'Permission denied', which sends the user to chmod a folder of a read-only file system
    import os
    from types import SimpleNamespace

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=os.ST_RDONLY))
    result = run_cli("schema", "net", "-o", str(tmp_path / "net.json"))
    assert (result.exit_code, result.stderr) == (2, f"--output: error: cannot write {tmp_path / 'net.json'}: "
                                                    "Read-only file system (choose a file in a folder you can write)\n")
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=0))
    result = run_cli("schema", "net", "-o", str(tmp_path / "net.json"))
    assert "net.json: Permission denied (choose" in result.stderr
