"""The ``weights:`` key of a solver: its schema (a path, or a list of rules), the checks made
before any file is read, and where its files are.

Each rule names a file (netcfg's ``.safetensors``, anyone's ``.safetensors``, a PyTorch
``state_dict`` in ``.pt``/``.pth``, or a run directory: its newest snapshot) and says
which of its blobs go where::

    weights:
      - file: ../runs/finetune_fmnist_0_4        # a run directory: its newest snapshot
        exclude: ['ip2\\.']                       # re.match on the file's blob names
        rename: {'^conv': 'features.conv'}        # re.sub, in order, before matching the net
        strict: false                             # true: every net blob filled, every blob used

Matching the rules to a net is weights.py's; nothing here imports torch (the spec imports this file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, PlainValidator, TypeAdapter, ValidationInfo
from pydantic_core import PydanticCustomError

from netcfg.errors import ConfigError
from netcfg.solver.rename_maps import RENAME_MAPS
from netcfg.spec import Spec

__all__ = ["WeightsRule", "WeightsField", "regex_errors", "rule_errors", "resolved_weights", "resolve_file"]


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
