"""What a resume refuses without --force: the differences between two resolved configs, a short line each."""

from __future__ import annotations

from netcfg.solver.config_diff import config_diff


def net(*layers: dict) -> dict:
    return {"net": {"name": "N", "layers": list(layers)}}


IP1 = {"name": "ip1", "type": "InnerProduct", "num_output": 128}
RELU = {"name": "relu1", "type": "ReLU", "top": ["ip1"]}
IP2 = {"name": "ip2", "type": "InnerProduct", "num_output": 10}


def test_an_added_layer_is_one_line_not_both_layer_lists():
    # a Dropout added to the net once printed the whole old and the whole new layer list on one line
    old, new = net(IP1, IP2), net(IP1, {"name": "drop1", "type": "Dropout", "top": ["ip1"]}, IP2)
    assert config_diff(old, new) == ["net.layers.drop1: (added) {'name': 'drop1', 'type': 'Dropout', 'top': ['ip1']}"]
    assert config_diff(new, old) == [
        "net.layers.drop1: (removed) {'name': 'drop1', 'type': 'Dropout', 'top': ['ip1']}"]


def test_layers_are_matched_by_name_and_their_changes_named_as_set_writes_them():
    old, new = net(IP1, RELU, IP2), net({**IP1, "num_output": 64}, {**IP2, "bias_term": False})
    assert config_diff(old, new) == [
        "net.layers.ip1.num_output: 128 -> 64",
        "net.layers.ip2.bias_term: (unset) -> False",
        "net.layers.relu1: (removed) {'name': 'relu1', 'type': 'ReLU', 'top': ['ip1']}",
    ]
    assert config_diff(net(IP1, IP2), net(IP2, IP1)) == ["net.layers: order ['ip1', 'ip2'] -> ['ip2', 'ip1']"]
    assert config_diff(net(IP1, RELU, IP2), net(IP1, RELU, IP2)) == []


def test_a_long_value_is_cut_and_unnamed_lists_still_compare_by_index():
    many = net(*({"name": f"ip{i}", "type": "InnerProduct", "num_output": 10 * i} for i in range(1, 40)))
    (line,) = config_diff({}, many)
    assert line.startswith("net: (unset) -> {'name': 'N', 'layers': [{'name': 'ip1'") and line.endswith("...")
    assert len(line) < 150
    assert config_diff({"data": {"train": {"mean_value": [1, 2, 3]}}}, {"data": {"train": {"mean_value": [1, 5, 3]}}}) \
        == ["data.train.mean_value[1]: 2 -> 5"]
    assert config_diff({"x": [1, 2]}, {"x": [1, 2, 3]}) == ["x: [1, 2] -> [1, 2, 3]"]


def test_keys_a_resume_may_change_are_left_out():
    assert config_diff({"max_iter": 10, "base_lr": 0.1}, {"max_iter": 20, "base_lr": 0.1}) == []
