"""The schema of ``blocks:`` and of block instances, for validation and for editors.

Block instances are expanded (netcfg.net.expander) before a net is validated, so the
NetSpec validator never sees one; these models check the blocks and instances as
written, and describe them in the JSON Schema that `netcfg schema net` writes.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from netcfg.layers.base import RuleList, StrList
from netcfg.net.expr import RESERVED
from netcfg.spec import Spec

__all__ = ["BlockSpec", "BlockUse", "OrBlockUse"]


class BlockUse(Spec):
    """An entry in a layer list that stands for the layers of a block."""

    name: str = Field(..., min_length=1, description="instance name: the prefix of its layers' names "
                      "(stage2.conv1; with repeat, stage2.block1.conv1) and the name of its output blob")
    block: str = Field(..., min_length=1, description="the block to instantiate (a key of `blocks:`)")
    repeat: int | None = Field(None, ge=1, description="instantiate this many times in sequence, as <name>.block1 .. "
                               "<name>.blockN; each reads the previous one's output")
    args: dict[str, Any] = Field(default_factory=dict, description="values of the block's params")
    first: dict[str, Any] = Field(default_factory=dict, description="params overridden for the first repeat only "
                                  "(e.g. {stride: 2, project: true})")
    bottom: StrList | None = Field(None, description="input blob(s); default: the previous layer's top")
    top: str | None = Field(None, description="name of the output blob; default: the instance name")
    include: RuleList = Field(
        default_factory=list, description="keep the instance's layers when any rule matches (and their own rules do)")
    exclude: RuleList = Field(
        default_factory=list, description="drop the instance's layers when any rule matches")


class BlockSpec(Spec):
    """A parameterised list of layers, instantiated by `{name: ..., block: NAME, args: {...}}`."""

    params: dict[str, Any] = Field(default_factory=dict, description="parameter -> default value; null: required. "
                                   "Read them in any value as ${name} or ${name * 4}")
    layers: list[dict[str, Any]] = Field(..., min_length=1, description="layers (or block instances) as in a net's "
                                         "`layers:`; names, blobs and share names are scoped to the instance")

    @field_validator("params")
    @classmethod
    def _names(cls, params: dict[str, Any]) -> dict[str, Any]:
        for p in params:
            if not p.isidentifier() or p in RESERVED or p in ("true", "false", "null", "min", "max", "int", "round"):
                raise ValueError(f"parameter name '{p}' is not allowed: use a plain identifier other than "
                                 f"{', '.join(RESERVED)}, true, false, null, min, max, int, round")
        return params


class OrBlockUse:
    """JSON Schema marker for a layer list's items: a layer or a block instance (for editors;
    instances are expanded before validation, so the validator never sees one)."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        use = handler.generate_json_schema.generate_inner(BlockUse.__pydantic_core_schema__)
        return {"anyOf": [handler(core_schema), use]}
