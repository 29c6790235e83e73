"""``--plugin MODULE`` on every command that shows or reads layer types: a type that only a
plugin brings is listed by ``layers``, is in ``schema``'s union, and draws, times and expands."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid

import pytest

from netcfg.layers import _registry
from tests.cli import netcfg
from tests.test_registry import PLUGIN  # a layer type Twice<tag> that doubles its input


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """(module name, layer type) of a plugin on the path, not imported yet; its type is
    unregistered after the test."""
    tag = uuid.uuid4().hex[:8]
    module, cls = f"netcfg_cli_plugin_{tag}", f"Twice{tag}"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{module}.py").write_text(textwrap.dedent(PLUGIN.format(cls=cls)))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry.registry()))
    yield module, cls
    sys.modules.pop(module, None)


def test_layers_lists_and_shows_a_plugin_type(plugin):
    module, cls = plugin
    code, _, err = netcfg("layers", cls)
    assert code == 2 and f"unknown layer type '{cls}'" in err
    code, out, err = netcfg("layers", "--plugin", module)
    assert code == 0, err
    assert any(line.split()[:1] == [cls] and "x * 2." in line for line in out.splitlines())
    code, out, err = netcfg("layers", cls, "--plugin", module)
    assert code == 0, err
    assert out.startswith(f"{cls}: x * 2.")


def test_schema_holds_a_plugin_type(plugin, tmp_path):
    module, cls = plugin
    code, out, err = netcfg("schema", "net", "--plugin", module)
    assert code == 0, err
    assert cls in json.loads(out)["$defs"]["Layer"]["discriminator"]["mapping"]
    code, _, err = netcfg("schema", "solver", "--plugin", module, "-o", tmp_path / "solver.json")
    assert code == 0, err
    assert cls in (tmp_path / "solver.json").read_text()


def test_draw_time_and_expand_read_a_net_with_a_plugin_type(plugin, tmp_path):
    module, cls = plugin
    net = tmp_path / "net.yaml"
    net.write_text(f"name: p\ninputs: {{x: [3]}}\nlayers:\n  - {{name: twice, type: {cls}, bottom: x}}\n")
    code, _, err = netcfg("draw", net)
    assert code == 2 and f"unknown layer type '{cls}'" in err
    code, out, err = netcfg("draw", net, "--plugin", module)
    assert code == 0, err
    assert cls in out
    code, out, err = netcfg("time", net, "--plugin", module, "-n", "1", "--warmup", "0", "-b", "2", "--json")
    assert code == 0, err
    assert [x["type"] for x in json.loads(out)["layers"]] == [cls]
    code, out, err = netcfg("expand", net, "--plugin", module)
    assert code == 0, err
    assert f"{{name: twice, type: {cls}, bottom: x}}" in out


def test_a_plugin_that_is_not_there_is_named(tmp_path):
    code, out, err = netcfg("layers", "--plugin", "no_such_netcfg_plugin")
    assert (code, out) == (2, "")
    assert err.startswith("--plugin no_such_netcfg_plugin: error: cannot import plugin module 'no_such_netcfg_plugin'")
