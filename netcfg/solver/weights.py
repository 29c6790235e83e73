"""Initial weights from rules (``weights:`` as a list): rules -> plan -> report -> copy.

Each rule names a file (netcfg's ``.safetensors``, anyone's ``.safetensors``, a PyTorch
``state_dict`` in ``.pt``/``.pth``, or a run directory: its newest snapshot) and says
which of its blobs go where::

    weights:
      - file: ../runs/finetune_fmnist_0_4        # a run directory: its newest snapshot
        exclude: ['ip2\\.']                       # re.match on the file's blob names
        rename: {'^conv': 'features.conv'}        # re.sub, in order, before matching the net
        strict: false                             # true: every net blob filled, every blob used

A plan is computed before anything is copied, so ``netcfg weights`` prints exactly
what ``netcfg train`` will do, and a bad rule leaves the net untouched.
Nothing here imports torch at module level (the spec imports this file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, PlainValidator, TypeAdapter, ValidationInfo
from pydantic_core import PydanticCustomError

from netcfg.errors import ConfigError, ConfigErrors, NetcfgError
from netcfg.solver.rename_maps import RENAME_MAPS, apply_map, map_hint
from netcfg.spec import Spec

__all__ = ["WeightsRule", "WeightsField", "regex_errors", "rule_errors", "plan_weights", "WeightsPlan",
           "RuleReport", "net_targets", "load_rules", "resolved_weights", "resolve_file", "layer_of"]


class WeightsRule(Spec):
    """One rule of a solver's ``weights:`` list: which blobs of one file fill which net blobs."""

    file: str = Field(..., min_length=1, description="weights file (.safetensors, or a PyTorch state_dict .pt/.pth) "
                      "or a run directory (its newest snapshot); relative to the solver file")
    include: list[str] = Field(default_factory=list, description="take only the file's blobs whose name matches "
                               "one of these regexes (re.match: anchored at the start); default: every blob")
    exclude: list[str] = Field(default_factory=list, description="leave out the file's blobs whose name matches "
                               "one of these regexes (names as in the file, before renaming)")
    rename_map: Literal[tuple(RENAME_MAPS)] | None = Field(  # type: ignore[valid-type]
        None, description="a named map applied to the file's names first: " + ", ".join(RENAME_MAPS))
    rename: dict[str, str] = Field(default_factory=dict, description="regex -> replacement, re.sub on each file "
                                   "blob name in order (after rename_map), before matching the net's names")
    strict: bool = Field(False, description="refuse unless every net blob is filled and every included blob "
                         "of this file is used (default: report them and go on)")


_RULES = TypeAdapter(list[WeightsRule])


def _validate(value: Any, info: ValidationInfo) -> str | list[WeightsRule] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return _RULES.validate_python(value, context=info.context)
    raise PydanticCustomError("weights_type", "weights must be a file path, or a list of rules "
                              "(mappings with file, include, exclude, rename, strict), got {value}", {"value": repr(value)})


def _serialize(value: Any, info: Any) -> Any:
    if isinstance(value, list):
        return [r.model_dump(mode=info.mode, exclude_unset=info.exclude_unset) for r in value]
    return value


class _Schema:
    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": handler(WeightsRule.__pydantic_core_schema__)},
                          {"type": "null"}]}


# The type of SolverSpec.weights: a path (today's meaning: every blob by layer name) or rules.
WeightsField = Annotated[str | list[WeightsRule] | None, PlainValidator(_validate), PlainSerializer(_serialize),
                         _Schema()]


# ---------------------------------------------------------------- checks before any file is read


def regex_errors(patterns: list[str], path: tuple) -> list[ConfigError]:
    """A located error (key path ``path + (i,)``) for each pattern that is not a regex."""
    errs = []
    for i, p in enumerate(patterns):
        try:
            re.compile(p)
        except re.error as e:
            errs.append(ConfigError(f"bad regular expression {p!r}: {e}", path + (i,),
                                    hint="Python re syntax; escape a literal dot as '\\.'"))
    return errs


def rule_errors(weights: Any) -> list[ConfigError]:
    """The regexes of every rule, checked at load time (``netcfg check`` sees them)."""
    if not isinstance(weights, list):
        return []
    errs = []
    for i, rule in enumerate(weights):
        errs += regex_errors(rule.include, ("weights", i, "include"))
        errs += regex_errors(rule.exclude, ("weights", i, "exclude"))
        for pattern in rule.rename:
            errs += [ConfigError(e.message, ("weights", i, "rename", pattern), hint=e.hint)
                     for e in regex_errors([pattern], ())]
    return errs


def resolve_file(file: str, base_dir: Path) -> Path:
    """A rule's file made absolute; a run directory becomes its newest snapshot's weights, and a
    snapshot's ``.solverstate`` the weights beside it (a state without them is left for the
    loader to refuse, naming them), as netcfg export reads them."""
    path = Path(file).expanduser()
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if path.is_dir():
        from netcfg.solver.rundir import newest_snapshot  # rundir imports the spec, which imports this

        state = newest_snapshot(path)
        if state is not None:
            return state.with_suffix(".safetensors")
    if path.suffix == ".solverstate" and path.with_suffix(".safetensors").is_file():
        return path.with_suffix(".safetensors")
    return path


def resolved_weights(spec) -> str | list[dict] | None:
    """``weights`` for a run's config.yaml: every file absolute, run directories pinned to
    the snapshot they gave, so the config loads back from anywhere."""
    if isinstance(spec.weights, str):
        return str(resolve_file(spec.weights, spec.base_dir))
    if not spec.weights:
        return spec.weights
    return [{**r.model_dump(mode="json", exclude_unset=True), "file": str(resolve_file(r.file, spec.base_dir))}
            for r in spec.weights]


# ---------------------------------------------------------------- the plan


@dataclass
class RuleReport:
    """What one rule does: file blobs matched (file name, net name), left out, unused, mismatched."""

    index: int
    file: Path
    total: int = 0
    matched: list[tuple[str, str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)                      # by include/exclude
    unused: list[tuple[str, str]] = field(default_factory=list)           # (file name, renamed) not in the net
    mismatched: list[tuple[str, str, list[int], list[int]]] = field(default_factory=list)  # file, net, shapes
    with_layer: list[tuple[str, str]] = field(default_factory=list)       # fit, but a blob of their layer does not
    overridden: int = 0                                                    # net blobs a later rule fills again
    hint: str | None = None                                                # for the unused: the rename_map to add

    @property
    def renamed(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.matched if a != b]


@dataclass
class WeightsPlan:
    """Every rule's report, the net blobs nobody fills, and what strict rules refuse."""

    rules: list[RuleReport]
    missing: list[str]
    total: int                                             # net blobs (num_batches_tracked not counted)
    copies: dict[str, Any] = field(default_factory=dict)   # net name -> file tensor (a later rule wins)
    refusals: list[ConfigError] = field(default_factory=list)

    def lines(self, *, full: bool = False) -> list[str]:
        """The report: every name when ``full`` (the dry run), the first few otherwise (the train log)."""
        show = (lambda xs: ", ".join(xs)) if full else _first
        out = []
        for r in self.rules:
            out.append(f"rule {r.index + 1}: {r.file} ({r.total} blobs): {len(r.matched)} matched, "
                       f"{len(r.renamed)} renamed, {len(r.excluded)} excluded, {len(r.unused)} unused, "
                       f"{len(r.mismatched)} shape mismatches")
            plain = [b for a, b in r.matched if a == b]
            if plain:
                out.append(f"  matched ({len(plain)}): {show(plain)}")
            if r.renamed:
                out.append(f"  renamed ({len(r.renamed)}): {show([f'{a} -> {b}' for a, b in r.renamed])}")
            if r.excluded:
                out.append(f"  excluded by include/exclude ({len(r.excluded)}): {show(r.excluded)}")
            if r.unused:
                out.append(f"  unused, no such blob in the net ({len(r.unused)}): "
                           f"{show([a if a == b else f'{a} (as {b})' for a, b in r.unused])}")
            if r.hint:
                out.append(f"  hint: {r.hint}")
            if r.mismatched:
                out.append(f"  shape mismatch, left as initialised ({len(r.mismatched)}): "
                           + show([f"{b} (file {fs}, net {ns})" for _, b, fs, ns in r.mismatched]))
            if r.with_layer:
                out.append(f"  left as initialised with their layer, which has a shape mismatch "
                           f"({len(r.with_layer)}): {show([b for _, b in r.with_layer])}")
            if r.overridden:
                out.append(f"  {r.overridden} of these are filled again by a later rule (the last rule wins)")
        if self.missing:
            out.append(f"missing, left as initialised ({len(self.missing)}): {show(self.missing)}")
        filled = sum(not n.endswith("num_batches_tracked") for n in self.copies)
        out.append(f"weights: {filled} of {self.total} net blobs filled from {len(self.rules)} rule(s)")
        return out


def layer_of(blob: str) -> str:
    """The layer of a ``<layer>.<blob>`` name (a layer's name may hold dots: ``layer2.block1.bn1``)."""
    return blob.rsplit(".", 1)[0]


def _counter(blob: str) -> bool:
    return blob.endswith("num_batches_tracked")  # BatchNorm's counter: never reported on its own


def _first(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more; `netcfg weights` lists all)" if len(names) > n else "")


def net_targets(nets) -> dict[str, tuple[tuple[int, ...], list]]:
    """``{blob name: (shape, [tensors])}`` over the train and test nets (a test-only layer
    is filled too; a shared layer once)."""
    out: dict[str, tuple[tuple[int, ...], list]] = {}
    for net in nets:
        if net is None:
            continue
        for name, t in net.state_dict(keep_vars=True).items():
            shape, tensors = out.setdefault(name, (tuple(t.shape), []))
            if tuple(t.shape) == shape and not any(x is t for x in tensors):
                tensors.append(t)
    return out


def _read(rule: WeightsRule, i: int, base_dir: Path) -> tuple[Path, dict]:
    from netcfg.solver.weights_file import load_weights

    path = resolve_file(rule.file, base_dir)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory without a snapshot (no <prefix>_iter_<N>.safetensors)",
                          ("weights", i, "file"), hint="name a weights file, or a run directory that has snapshots")
    if not path.is_file():
        near = sorted(p.name for p in path.parent.iterdir())[:8] if path.parent.is_dir() else []
        raise ConfigError(f"weights file not found: {path}", ("weights", i, "file"),
                          hint=("files there: " + ", ".join(near)) if near else
                          "a relative path resolves against the solver file's directory")
    try:
        tensors, _ = load_weights(path)
    except NetcfgError as e:
        raise ConfigError(getattr(e, "message", str(e)), ("weights", i, "file")) from None
    return path, tensors


def plan_weights(rules: list[WeightsRule], base_dir: Path, targets: dict[str, tuple]) -> WeightsPlan:
    """Match every rule's file blobs to the net's names (``targets`` from ``net_targets``).

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
            if filled_by.get(net_name, len(reports)) != len(reports):
                reports[filled_by[net_name]].overridden += 1
            filled_by[net_name] = len(reports)
            copies[net_name] = tensors[file_name]
        reports.append(report)
    if errors:
        raise ConfigErrors(errors)
    counted = [n for n in targets if not n.endswith("num_batches_tracked")]  # torch's counter, not a weight
    plan = WeightsPlan(reports, [n for n in counted if n not in copies], len(counted), copies)
    for r in reports:
        if rules[r.index].strict and (r.unused or r.mismatched or plan.missing):
            what = [f"{len(r.unused)} of its blobs are not in the net" if r.unused else "",
                    f"{len(r.mismatched)} differ in shape" if r.mismatched else "",
                    f"{len(plan.missing)} net blobs are not filled" if plan.missing else ""]
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
    report = RuleReport(i, path, total=len(tensors))
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
    report.with_layer = [(a, b) for a, b in report.matched if layer_of(b) in misfits and not _counter(b)]
    report.matched = [(a, b) for a, b in report.matched if layer_of(b) not in misfits]
    names = list(tensors)
    if not rule.rename_map and not rule.rename:
        report.hint = map_hint([a for a, _ in report.unused])
    for (kind, key), n in hits.items():
        if not n:
            pattern = key if kind == "rename" else getattr(rule, kind)[key]
            errors.append(ConfigError(f"{kind} pattern {pattern!r} matches no blob of {path.name}",
                                      ("weights", i, kind, key), hint=f"its blobs: {_first(names, 6)}"))
    if not report.matched and not any(e.path[:2] == ("weights", i) for e in errors):
        tried = [b for _, b in report.unused][:4] or names[:4]
        errors.append(ConfigError(f"this rule fills no blob of the net: none of the {len(names)} blobs of "
                                  f"{path.name} it takes has a net blob's name and shape", ("weights", i),
                                  hint=report.hint or f"it offers {', '.join(tried)}; the net has "
                                       f"{_first(list(targets), 4)}; add rename (or rename_map) so the names meet"))
    return report


# ---------------------------------------------------------------- copying


def load_rules(spec, nets) -> list[str]:
    """Plan the spec's rules against ``nets`` (train, test), refuse located errors, copy.
    Returns the report lines for the log."""
    import torch

    targets = net_targets(nets)
    try:
        plan = plan_weights(spec.weights, spec.base_dir, targets)
    except ConfigErrors as e:
        raise ConfigErrors([spec.locate(x) for x in e.errors]) from None
    if plan.refusals:
        raise ConfigErrors([spec.locate(x) for x in plan.refusals])
    with torch.no_grad():
        for name, src in plan.copies.items():
            for target in targets[name][1]:
                target.copy_(src.to(target.dtype))
    return plan.lines()
