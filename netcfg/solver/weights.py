"""Initial weights from rules (``weights:`` as a list): rules -> plan -> report -> copy.

The rules' schema is weights_spec.py's, the plan and its report weights_plan.py's; here
every rule's file is read and its blobs matched to the net's names. A plan is computed
before anything is copied, so ``netcfg weights`` prints exactly what ``netcfg train``
will do, and a bad rule leaves the net untouched. torch is imported only to copy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from netcfg.errors import ConfigError, ConfigErrors, NetcfgError
from netcfg.solver.rename_maps import RENAME_MAPS, apply_map, map_hint
from netcfg.solver.weights_plan import RuleReport, WeightsPlan, first_names, is_counter, layer_of
from netcfg.solver.weights_spec import WeightsRule, resolve_file

__all__ = ["plan_weights", "net_targets", "load_rules", "load_file", "check_file", "read_error"]


def net_targets(nets) -> tuple[dict[str, tuple[tuple[int, ...], list]], list[tuple[str, list[int], list[int]]]]:
    """``{blob name: (shape, [tensors])}`` over the train and test nets (a test-only layer
    is filled too; a shared layer once), and the test net's blobs that no weights fill: one
    of a TRAIN blob's name but another shape, as ``(name, its shape, the TRAIN blob's)``."""
    out: dict[str, tuple[tuple[int, ...], list]] = {}
    others = []
    for net in nets:
        if net is None:
            continue
        for name, t in net.state_dict(keep_vars=True).items():
            shape, tensors = out.setdefault(name, (tuple(t.shape), []))
            if tuple(t.shape) != shape:
                others.append((name, list(t.shape), list(shape)))
            elif not any(x is t for x in tensors):
                tensors.append(t)
    return out, others


def _read(rule: WeightsRule, i: int, base_dir: Path) -> tuple[Path, dict]:
    from netcfg.solver.weights_file import load_weights

    path = resolve_file(rule.file, base_dir)
    check_file(path, ("weights", i, "file"), rule.file)
    try:
        tensors, _ = load_weights(path)
    except NetcfgError as e:
        raise read_error(e, path, ("weights", i, "file")) from None
    return path, tensors


def check_file(path: Path, key: tuple, given: str) -> None:
    """Refuse, at ``key``, a weights path that is a directory without a snapshot, or nothing
    (``given``: the path as the solver or command line wrote it)."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory without a snapshot (no <prefix>_iter_<N>.safetensors)",
                          key, hint="name a weights file, or a run directory that has snapshots")
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}", key, hint=_not_found_hint(path, given))


def _not_found_hint(path: Path, given: str) -> str:
    """What is where ``path`` was looked for; ``given`` relative (as written in the solver, or a
    ``--set``), where it was looked for. ``netcfg train --weights`` gives it absolute, resolved
    against the working directory: the solver's directory would be a false lead."""
    if path.parent.is_dir():
        near = sorted(p.name for p in path.parent.iterdir())[:8]
        if near:
            return "files there: " + ", ".join(near)
        said = f"{path.parent} is empty"
    else:
        missing = path.parent
        while not missing.parent.is_dir() and missing.parent != missing:
            missing = missing.parent
        said = f"there is no folder {missing}"
    relative = not Path(given).expanduser().is_absolute()
    return said + ("; a relative path resolves against the solver file's directory" if relative else "")


def read_error(e: NetcfgError, path: Path, key: tuple) -> ConfigError:
    """The reader's error on ``path`` (unreadable, no blob fits) at the solver's ``key``;
    located, it keeps the file's path in its message (a run directory names its snapshot)."""
    return ConfigError(getattr(e, "message", str(e)), key, file=str(path), hint=getattr(e, "hint", None))


def load_file(spec, load) -> None:
    """``weights: FILE`` (or ``--weights``): ``load(path)``, the solver's copy by name, with
    its errors located at ``weights``, as the rules' are."""
    from netcfg.solver.checkpoint import CheckpointError

    path = resolve_file(spec.weights, spec.base_dir)
    try:
        check_file(path, ("weights",), spec.weights)
    except ConfigError as e:
        raise spec.locate(e) from None
    try:
        load(path)
    except (ConfigError, CheckpointError) as e:
        raise spec.locate(read_error(e, path, ("weights",))) from None


def plan_weights(rules: list[WeightsRule], base_dir: Path, targets: dict[str, tuple],
                 others: list[tuple[str, list[int], list[int]]] = ()) -> WeightsPlan:
    """Match every rule's file blobs to the net's names (``targets`` and ``others``, the TEST
    net's blobs left out of them, from ``net_targets``).

    Raises ConfigErrors (key paths under ``weights``) for a file that cannot be read, a
    regex that matches no blob, a rule that fills nothing; strict rules' objections are
    collected in ``refusals``, so a dry run can print the whole report first."""
    errors: list[ConfigError] = []
    reports: list[RuleReport] = []
    copies: dict[str, Any] = {}
    filled_by: dict[str, int] = {}
    for i, rule in enumerate(rules):
        try:
            path, tensors = _read(rule, i, base_dir)
        except ConfigError as e:
            errors.append(e)
            continue
        report = _match(rule, i, path, tensors, targets, errors)
        for file_name, net_name in report.matched:
            if filled_by.get(net_name, len(reports)) != len(reports) and not is_counter(net_name):
                reports[filled_by[net_name]].overridden += 1
            filled_by[net_name] = len(reports)
            copies[net_name] = tensors[file_name]
        reports.append(report)
    if errors:
        raise ConfigErrors(errors)
    counted = [n for n in targets if not is_counter(n)]
    plan = WeightsPlan(reports, [n for n in counted if n not in copies], len(counted), copies,
                       test_only=[o for o in others if not is_counter(o[0])])
    for r in (r.counted() for r in reports):  # counted as the report counts them
        if rules[r.index].strict and (r.unused or r.mismatched or plan.missing or plan.test_only):
            what = [f"{len(r.unused)} of its blobs are not in the net" if r.unused else "",
                    f"{len(r.mismatched)} differ in shape" if r.mismatched else "",
                    f"{len(plan.missing)} net blobs are not filled" if plan.missing else "",
                    f"{len(plan.test_only)} TEST net blobs are not filled" if plan.test_only else ""]
            plan.refusals.append(ConfigError("strict rule refuses: " + "; ".join(w for w in what if w),
                                             ("weights", r.index, "strict"),
                                             hint="`netcfg weights SOLVER` lists them; fix the rule, or strict: false"))
    return plan


def _match(rule: WeightsRule, i: int, path: Path, tensors: dict, targets: dict, errors: list) -> RuleReport:
    """One rule against one file's blobs; a regex that matches no blob name is an error (a typo)."""
    include = [re.compile(p) for p in rule.include]
    exclude = [re.compile(p) for p in rule.exclude]
    rename = [(re.compile(p), r) for p, r in rule.rename.items()]
    steps = RENAME_MAPS[rule.rename_map] if rule.rename_map else []
    hits = {("include", j): 0 for j in range(len(include))} | {("exclude", j): 0 for j in range(len(exclude))}
    hits |= {("rename", p): 0 for p in rule.rename}
    report = RuleReport(i, path, total=len(tensors), counters=sum(map(is_counter, tensors)))
    for name, t in tensors.items():
        inc = [j for j, p in enumerate(include) if p.match(name)]
        exc = [j for j, p in enumerate(exclude) if p.match(name)]
        for key in [("include", j) for j in inc] + [("exclude", j) for j in exc]:
            hits[key] += 1
        if (include and not inc) or exc:
            report.excluded.append(name)
            continue
        new = apply_map(name, steps)
        for (pattern, replacement), key in zip(rename, rule.rename):
            try:
                new, n = pattern.subn(replacement, new)
            except (re.error, IndexError) as e:  # a bad group reference shows only when applied
                errors.append(ConfigError(f"bad replacement {replacement!r}: {e}", ("weights", i, "rename", key)))
                return report
            hits[("rename", key)] += n > 0
        if new not in targets:
            report.unused.append((name, new))
        elif tuple(t.shape) != targets[new][0]:
            report.mismatched.append((name, new, list(t.shape), list(targets[new][0])))
        else:
            report.matched.append((name, new))
    misfits = {layer_of(b) for _, b, _, _ in report.mismatched}  # a layer is copied whole or not at all
    report.with_layer = [(a, b) for a, b in report.matched if layer_of(b) in misfits and not is_counter(b)]
    report.matched = [(a, b) for a, b in report.matched if layer_of(b) not in misfits]
    names = list(tensors)
    onto: dict[str, list[str]] = {}
    for a, b in report.matched + [(a, b) for a, b, _, _ in report.mismatched]:
        onto.setdefault(b, []).append(a)
    if clash := next(((b, a) for b, a in onto.items() if len(a) > 1), None):  # the file's order would pick one
        errors.append(ConfigError(f"{len(clash[1])} blobs of {path.name} are renamed onto one net blob: "
                                  f"{', '.join(clash[1][:4])} -> {clash[0]}",
                                  ("weights", i, "rename" if rule.rename else "rename_map"),
                                  hint="a net blob takes one blob of a rule; rename them apart, or exclude all but one"))
    if not rule.rename_map and not rule.rename:
        report.hint = map_hint([a for a, _ in report.unused])
    for (kind, key), n in hits.items():
        if not n:
            pattern = key if kind == "rename" else getattr(rule, kind)[key]
            errors.append(_no_match(kind, key, pattern, path, names, report.excluded, steps, i))
    if not report.matched and not any(e.path[:2] == ("weights", i) for e in errors):
        tried = [b for _, b in report.unused][:4] or names[:4]
        errors.append(ConfigError(f"this rule fills no blob of the net: none of the {len(names)} blobs of "
                                  f"{path.name} it takes has a net blob's name and shape", ("weights", i),
                                  hint=report.hint or f"it offers {', '.join(tried)}; the net has "
                                       f"{first_names(list(targets), 4)}; add rename (or rename_map) so the names meet"))
    return report


def _no_match(kind: str, key, pattern: str, path: Path, names: list[str], excluded: list[str], steps, i: int):
    """A pattern that matched nothing: a typo, or (a rename) one that only include/exclude's
    left-out blobs would have met."""
    met = [a for a in excluded if kind == "rename" and re.search(pattern, apply_map(a, steps))]
    if met:
        return ConfigError(f"rename pattern {pattern!r} matches only blobs that include/exclude leave out "
                           f"({first_names(met, 4)}), so it renames nothing", ("weights", i, kind, key),
                           hint="drop it, or take those blobs: include/exclude match the names in the file, "
                                "before renaming")
    return ConfigError(f"{kind} pattern {pattern!r} matches no blob of {path.name}", ("weights", i, kind, key),
                       hint=f"its blobs: {first_names(names, 6)}")


# ---------------------------------------------------------------- copying


def load_rules(spec, nets) -> list[str]:
    """Plan the spec's rules against ``nets`` (train, test), refuse located errors, copy.
    Returns the report lines for the log."""
    import torch

    targets, others = net_targets(nets)
    try:
        plan = plan_weights(spec.weights, spec.base_dir, targets, others)
    except ConfigErrors as e:
        raise ConfigErrors([spec.locate(x) for x in e.errors]) from None
    if plan.refusals:
        raise ConfigErrors([spec.locate(x) for x in plan.refusals])
    with torch.no_grad():
        for name, src in plan.copies.items():
            for target in targets[name][1]:
                target.copy_(src.to(target.dtype))
    return plan.lines()
