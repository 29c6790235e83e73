"""NetSpec: the schema of a net file, and loading one from YAML with located errors."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PrivateAttr

from netcfg.errors import ConfigError, ConfigErrors, did_you_mean
from netcfg.layers.base import LayerSpec
from netcfg.layers._registry import AnyLayer
from netcfg.net.expr import has_expr
from netcfg.net.templates import BlockSpec, OrBlockUse, expand_templates, merge_repeats
from netcfg.overrides import apply_overrides
from netcfg.source import Source, document_kind, load_yaml, value_at
from netcfg.spec import Spec, validate

__all__ = ["InputSpec", "NetSpec", "load_net", "net_from_source", "DTYPES"]

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool")


def _shape_shorthand(v: Any) -> Any:
    return {"shape": v} if isinstance(v, list) else v


class InputSpec(Spec):
    """One named input of the net: its per-sample shape (no batch dimension) and dtype."""

    shape: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(..., description="per-sample shape, e.g. [1, 28, 28]; [] for a scalar label")
    dtype: Literal[DTYPES] = Field("float32", description="element type; labels are int64")  # type: ignore[valid-type]


class NetSpec(Spec):
    """A net file: a name, named inputs, and layers wired by blob name in file order."""

    name: str = Field(..., min_length=1, description="the net's name")
    inputs: dict[str, Annotated[InputSpec, BeforeValidator(_shape_shorthand, json_schema_input_type=InputSpec | list[int])]] = Field(
        ..., min_length=1, description="named inputs: per-sample shape, or {shape, dtype}")
    layers: list[Annotated[AnyLayer, OrBlockUse]] = Field(..., min_length=1, description="the layers, run in file order")
    blocks: dict[str, BlockSpec] = Field(default_factory=dict, description="parameterised lists of layers, used in "
                                         "`layers` as {name, block, repeat, args}; expanded before validation")
    plugins: list[str] = Field(default_factory=list, description="Python modules to import for third-party layer types")

    _source: Source | None = PrivateAttr(None)

    @property
    def source(self) -> Source | None:
        """Where this spec came from, for locating errors found after validation."""
        return self._source

    def locate(self, err: ConfigError) -> ConfigError:
        if self._source is not None:
            return self._source.locate(err)
        return err

    def stage_names(self) -> set[str]:
        """The stages its layers' include/exclude rules name (``stage`` or ``not_stage``)."""
        return {s for layer in self.layers for rule in (*layer.include, *layer.exclude)
                for s in (*rule.stage, *rule.not_stage)}

    def checked_stages(self, stages, where: str) -> tuple[str, ...]:
        """``stages`` as a tuple (a str is one stage), once ``stage_error`` finds none unknown;
        else that error is raised."""
        stages = (stages,) if isinstance(stages, str) else tuple(stages or ())
        if error := self.stage_error(stages, where):
            raise error
        return stages

    def stage_error(self, stages, where: str) -> ConfigError | None:
        """A stage among ``stages`` that no rule names (a typo would silently build another net,
        as Caffe builds it): the error, at key ``where`` (its index there), or at a command-line
        option ``where`` ("--stage"); None if every stage is named."""
        known = self.stage_names()
        for i, stage in enumerate([stages] if isinstance(stages, str) else stages):
            if stage not in known:
                hint = did_you_mean(stage, known) if known else "its layers' include/exclude rules name no stage"
                msg = f"stage '{stage}' is named by no include/exclude rule of net '{self.name}', so it would change nothing"
                if where.startswith("--"):
                    return ConfigError(msg, file=where, hint=hint)
                return ConfigError(msg, (where, i), hint=hint)
        return None


def _import_plugins(src: Source) -> None:
    plugins = src.data.get("plugins") or []
    if not isinstance(plugins, list):
        return  # the schema reports the wrong type
    errors = []
    for i, mod in enumerate(plugins):
        if not isinstance(mod, str):
            continue
        try:
            importlib.import_module(mod)
        except ImportError as e:
            errors.append(src.locate(ConfigError(f"cannot import plugin module '{mod}': {e}", ("plugins", i),
                                                 hint="is it installed, or on PYTHONPATH?")))
    if errors:
        raise ConfigErrors(errors)


def net_from_source(src: Source) -> NetSpec:
    """Validate a located YAML document as a NetSpec."""
    if document_kind(src.data) == "solver":
        net = src.data["net"]
        raise ConfigErrors([src.locate(ConfigError(
            "this is a solver file (it names a net:), but a net file is needed here", ("net",),
            hint=f"its net is {net}, relative to this file" if isinstance(net, str) else "give a net file (name, inputs, layers)"),
            at_key=True)])
    _import_plugins(src)
    original, src = src, expand_templates(src)
    try:
        spec = validate(NetSpec, src)
    except ConfigErrors as e:  # a typo in a block is reported once, not once per instance
        for err in e.errors:
            if err.path[:1] != ("blocks",) and has_expr(value_at(original.data, err.path)):
                err.hint = ("${...} is evaluated only inside a block's layers (see `blocks:` in docs/net-files.md); "
                            "here, write the value itself") + (f"; {err.hint}" if err.hint else "")
        raise ConfigErrors(merge_repeats(e.errors)) from None
    spec._source = src
    _set_paths(spec.layers, ("layers",))
    return spec


def _set_paths(layers: list[LayerSpec], prefix: tuple) -> None:
    for i, layer in enumerate(layers):
        layer._path = prefix + (i,)
        for key in ("body", "shortcut"):  # container layers (Residual)
            sub = getattr(layer, key, None)
            if isinstance(sub, list):
                _set_paths(sub, layer._path + (key,))


def load_net(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> NetSpec:
    """Read, validate and return the net file at ``path`` (with ``--set`` overrides)."""
    src = load_yaml(path)
    if overrides:
        apply_overrides(src, overrides)
    return net_from_source(src)
