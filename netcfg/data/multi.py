"""Source multi: several sources zipped sample by sample into one batch of named tensors.

Sample i of the batch holds sample i of every sub-source (an image from idx or
folder with its row of a CSV: image + tabular -> price). Each sub-source keeps
its own path, transforms and ``inputs:`` renaming; ``split`` and ``batch_size``
are the multi spec's (a sub-source may leave them out). The order, ``shuffle``,
``limit`` and ``drop_last`` are the multi spec's too, so the sources stay aligned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from netcfg.data.spec import TRANSFORM_KEYS, DataSourceSpec, SubSource
from netcfg.data.registry import register_source
from netcfg.data.split import SplitData, load_source
from netcfg.errors import ConfigError, ConfigErrors, FieldError

__all__ = ["MultiSpec"]

_INHERITED = ("split", "batch_size")


class MultiSpec(DataSourceSpec):
    """multi: the sub-sources whose tensors make up each sample."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ()

    sources: list[SubSource] = Field(..., min_length=1, description="the sources to zip; each names its own path, transforms and inputs")

    @model_validator(mode="before")
    @classmethod
    def _inherit(cls, data: Any) -> Any:
        # sub-sources take split and batch_size from here unless they say otherwise
        if isinstance(data, dict) and isinstance(data.get("sources"), list):
            for sub in data["sources"]:
                if isinstance(sub, dict):
                    for key in _INHERITED:
                        if key not in sub and key in data:
                            sub[key] = data[key]
        return data

    @model_validator(mode="after")
    def _no_own_transforms(self) -> MultiSpec:
        own = [k for k in TRANSFORM_KEYS if k in self.model_fields_set]
        if own:
            raise FieldError(f"{own[0]} belongs on the sub-source whose images it transforms", own[0])
        if self.path is not None:
            raise FieldError("multi reads no files itself: give path on each of its sources", "path")
        for i, sub in enumerate(self.sources):
            if sub.source == "multi":
                raise FieldError("multi sources do not nest: list the sources in one multi", ("sources", i, "source"))
            if sub.split != self.split:
                raise FieldError(f"sources[{i}] is split {sub.split} but multi is {self.split}", ("sources", i, "split"))
        return self

    def resolved_dump(self, base_dir: str | Path | None) -> dict[str, Any]:
        out = super().resolved_dump(base_dir)
        out["sources"] = [sub.resolved_dump(base_dir) for sub in self.sources]
        return out


@register_source("multi", spec=MultiSpec)
def load_multi(spec: MultiSpec, path: Path | None, base_dir: Path | None = None) -> SplitData:
    """Several sources zipped sample by sample (image + tabular, or several labels)."""
    parts: list[SplitData] = []
    errors: list[ConfigError] = []
    for i, sub in enumerate(spec.sources):
        try:
            parts.append(load_source(sub.model_copy(update={"limit": spec.limit or sub.limit}), base_dir))
        except ConfigErrors as e:
            errors += [x.prefixed(("sources", i)) for x in e.errors]
        except ConfigError as e:
            errors.append(e.prefixed(("sources", i)))
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    owner: dict[str, int] = {}
    for i, part in enumerate(parts):
        for name in part:
            if name in owner:
                errors.append(ConfigError(
                    f"sources[{owner[name]}] and sources[{i}] both give a tensor '{name}'", ("sources", i),
                    hint=f"rename one with inputs: {{{name}: <net input>}}"))
            owner.setdefault(name, i)
    counts = [p.num_samples for p in parts]
    if len(set(counts)) > 1:
        shown = ", ".join(f"sources[{i}] ({s.source}) {n}" for i, (s, n) in enumerate(zip(spec.sources, counts)))
        errors.append(ConfigError(f"the sources must have one sample each per row, but their {spec.split} splits "
                                  f"differ in length: {shown}", ("sources",),
                                  hint="zip only data sets made for each other, or set limit"))
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    for key in spec.inputs or {}:
        if key not in owner:
            raise ConfigError(f"the sources give no tensor '{key}'", ("inputs", key), hint=f"they give: {', '.join(owner)}")
    tensors = {spec.input_name(n): t for p in parts for n, t in p.tensors.items()}
    transforms = {spec.input_name(n): tr for p in parts for n, tr in p.transforms.items()}
    classes = {spec.input_name(n): c for p in parts for n, c in p.classes.items()}
    origins = {spec.input_name(n): ("inputs", n) if n in (spec.inputs or {}) else ("sources", i) + p.origins.get(n, ())
               for i, p in enumerate(parts) for n in p}
    return SplitData(tensors, transforms, classes, origins)
