"""What differs between a snapshot's resolved config and the one resuming from it, a short line each."""

from __future__ import annotations

from netcfg.data.spec import TRAIN_ONLY

__all__ = ["MAY_CHANGE", "config_diff"]

# keys a resumed run may change without being asked to confirm
MAY_CHANGE = {"max_iter", "display", "snapshot", "snapshot_keep", "snapshot_best", "test_interval", "test_iter",
              "device", "weights"}
_WIDTH = 120  # a value shown longer than this is cut: a whole layer list would fill the screen


def config_diff(old, new, path: str = "") -> list[str]:
    """Human-readable differences between two resolved configs. Lists of named mappings (a
    net's layers) are matched by name, so one added layer is one line, not both lists."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            if not path and k in MAY_CHANGE:
                continue
            key = f"{path}.{k}" if path else str(k)
            if k not in new and k in TRAIN_ONLY and key.startswith("data.test."):
                continue  # never applied to a test, and refused there since: a run from before resumes without it
            if k not in new:
                out.append(f"{key}: {_short(old[k])} -> (removed)")
            elif k not in old:
                out.append(f"{key}: (unset) -> {_short(new[k])}")
            else:
                out += config_diff(old[k], new[k], key)
        return out
    if isinstance(old, list) and isinstance(new, list):
        old_named, new_named = _by_name(old), _by_name(new)
        if old_named is not None and new_named is not None and old != new:
            return _named_diff(old_named, new_named, path)
        if len(old) == len(new):
            return [d for i, (a, b) in enumerate(zip(old, new)) for d in config_diff(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {_short(old)} -> {_short(new)}"]


def _named_diff(old: dict, new: dict, path: str) -> list[str]:
    """Items matched by name (``net.layers.ip1.num_output``, as ``--set`` writes it): what
    each kept one changed, which were added and removed, and a new order."""
    out = []
    for name in new:
        key = f"{path}.{name}"
        if name not in old:
            out.append(f"{key}: (added) {_short(new[name])}")
        else:
            out += config_diff(old[name], new[name], key)
    out += [f"{path}.{name}: (removed) {_short(item)}" for name, item in old.items() if name not in new]
    kept_old, kept_new = [n for n in old if n in new], [n for n in new if n in old]
    if kept_old != kept_new:
        out.append(f"{path}: order {_short(kept_old)} -> {_short(kept_new)}")
    return out


def _by_name(items: list) -> dict | None:
    """``{name: item}`` when every item is a mapping with a name of its own, else None."""
    named = {item.get("name"): item for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)}
    return named if len(named) == len(items) and items else None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= _WIDTH else text[:_WIDTH - 3] + "..."
