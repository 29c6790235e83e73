"""DataSourceSpec and DataSpec: the ``data:`` section of a solver file.

A split's mapping is validated by the spec class its ``source`` names (a
``DataSourceSpec`` subclass given to ``@register_source``, registry.py), so
unknown keys are reported with that source's valid keys. The ``source:`` field
lists every registered name in its errors and in the JSON Schema.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from netcfg.data.registry import known_source, source_enum, source_types
from netcfg.errors import FieldError
from netcfg.spec import Spec

__all__ = ["DataSourceSpec", "DataSpec", "AnySource", "source_spec"]


FloatPair = Annotated[list[float], Field(min_length=2, max_length=2)]


class DataSourceSpec(Spec):
    """One split of one data set and how its batches are made (Caffe's data layer)."""

    # keys holding file paths, made absolute in a run's config.yaml (see resolved_dump)
    PATH_KEYS: ClassVar[tuple[str, ...]] = ("path", "mean_file")

    source: str = Field(..., description="registered data source", json_schema_extra=source_enum)
    path: str | None = Field(None, min_length=1, description="where the files are (a directory or a file, per source); relative paths resolve against the solver file")
    split: Literal["train", "test"] = Field(..., description="which part of the data set")
    batch_size: int = Field(..., ge=1, description="samples per batch")
    shuffle: bool | None = Field(None, description="new random order every epoch; default: true for train, false for test")
    drop_last: bool = Field(False, description="drop the last partial batch of each epoch")
    limit: int | None = Field(None, ge=1, description="use only the first N samples (quick runs)")
    classes: list[int | str] | None = Field(None, min_length=1, description="keep only the samples of these labels "
                                            "(numbers, or names where the source knows them), relabelled 0..K-1 in this order")
    per_class: int | None = Field(None, ge=1, description="keep at most the first N samples of each class: a balanced "
                                  "small subset (applied after classes, before limit)")
    inputs: dict[str, str] | None = Field(None, description="rename the source's tensors (data, label, ...) to the net's input names")
    device_resident: bool | None = Field(None, description="keep the whole split on the training device; default: on CUDA when it takes under a quarter of the GPU's memory (otherwise pinned host memory and non-blocking copies)")
    # image transforms (Caffe's transform_param, plus pad and random erasing); they apply
    # to every image tensor of the source: 4 dimensions, (N, C, H, W)
    scale: float = Field(1.0, description="multiply raw pixel values (0.00390625 = 1/256 maps uint8 to [0, 1))")
    mean_value: list[float] | float | None = Field(None, description="subtracted before scale, one value or one per channel (Caffe's order)")
    mean_file: str | None = Field(None, min_length=1, description="a mean image subtracted before scale: .npy (C, H, W) or (H, W), or Caffe's .binaryproto")
    std: list[float] | float | None = Field(None, description="divide by this after mean and scale, one value or one per channel")
    crop_size: int | None = Field(None, ge=1, description="crop images to crop_size x crop_size: random in training, centred in testing")
    pad: int = Field(0, ge=0, description="zero-pad images by this many pixels before a random training crop (random shifts)")
    mirror: bool = Field(False, description="flip training images left-right at random")
    random_erasing: float = Field(0.0, ge=0, le=1, description="probability of erasing a random rectangle of a training image (Zhong et al. 2017)")
    erasing_area: FloatPair = Field([0.02, 0.33], description="erased area as a fraction of the image: [min, max]")
    erasing_ratio: FloatPair = Field([0.3, 3.3], description="aspect ratio (height / width) of the erased rectangle: [min, max]")
    erasing_value: float | Literal["random"] = Field("random", description="fill of the erased rectangle, after normalisation: 'random' (standard normal noise per pixel) or a number (0 = the mean)")

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        return known_source(v)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float] | float | None) -> list[float] | float | None:
        values = v if isinstance(v, list) else [v] if v is not None else []
        if any(s <= 0 for s in values):
            raise ValueError(f"every std value must be positive, got {v}")
        if isinstance(v, list) and not v:
            raise ValueError("std must list at least one value")
        return v

    @field_validator("mean_value")
    @classmethod
    def _nonempty_mean(cls, v: list[float] | float | None) -> list[float] | float | None:
        if isinstance(v, list) and not v:
            raise ValueError("mean_value must list at least one value")
        return v

    @field_validator("erasing_area", "erasing_ratio")
    @classmethod
    def _ordered_pair(cls, v: list[float], info: ValidationInfo) -> list[float]:
        low, high = v
        if not 0 < low <= high or (info.field_name == "erasing_area" and high > 1):
            bound = "0 < min <= max <= 1" if info.field_name == "erasing_area" else "0 < min <= max"
            raise ValueError(f"{info.field_name} must be [min, max] with {bound}, got {v}")
        return v

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, v: list[int | str] | None) -> list[int | str] | None:
        dup = sorted({str(c) for c in v or [] if v.count(c) > 1})
        if dup:
            raise ValueError(f"classes lists {', '.join(dup)} more than once; each class gets one new label")
        return v

    @field_validator("inputs")
    @classmethod
    def _distinct_names(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None:
            targets = list(v.values())
            dup = sorted({t for t in targets if targets.count(t) > 1})
            if dup:
                raise ValueError(f"inputs maps several tensors to the same name: {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> DataSourceSpec:
        kind = source_types().get(self.source)
        if kind is not None and kind.needs_path and self.path is None:
            raise ValueError(f"missing required key 'path': source '{self.source}' reads its files from a path, "
                             f"e.g. path: /usr/share/datasets/fashion-mnist")
        if self.mean_file is not None and self.mean_value is not None:
            raise FieldError("give mean_value or mean_file, not both", "mean_file")
        if self.shuffle is None:
            self.shuffle = self.split == "train"
        return self

    def resolve(self, path: str | None, base_dir: str | Path | None) -> Path | None:
        """A path of this spec with ``~`` expanded, made absolute against ``base_dir`` if relative."""
        if path is None:
            return None
        p = Path(path).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        return p.resolve()

    def resolved_path(self, base_dir: str | Path | None) -> Path | None:
        """``path``, absolute (see ``resolve``)."""
        return self.resolve(self.path, base_dir)

    def resolved_dump(self, base_dir: str | Path | None) -> dict[str, Any]:
        """The keys as written, with every path made absolute: a run's config.yaml loads
        back from any directory."""
        out = self.model_dump(mode="json", exclude_unset=True)
        for key in self.PATH_KEYS:
            if getattr(self, key, None) is not None:
                out[key] = str(self.resolve(getattr(self, key), base_dir))
        return out

    def input_name(self, tensor: str) -> str:
        """The net input a source tensor feeds (identity unless ``inputs`` renames it)."""
        return (self.inputs or {}).get(tensor, tensor)

    def has_image_transform(self) -> bool:
        """Whether any transform key is set (multi refuses them on itself)."""
        return any(k in self.model_fields_set for k in TRANSFORM_KEYS)


TRAIN_ONLY = ("mirror", "random_erasing")  # random augmentations, which a test split refuses
TRANSFORM_KEYS = ("scale", "mean_value", "mean_file", "std", "crop_size", "pad", "mirror", "random_erasing",
                  "erasing_area", "erasing_ratio", "erasing_value")


class _SourceName(Spec):
    """Validates only ``source`` (an unknown or missing name reports nothing else)."""

    source: str = Field(..., description="registered data source", json_schema_extra=source_enum)

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        return known_source(v)


def _dispatch(value: Any, info: ValidationInfo) -> DataSourceSpec:
    if isinstance(value, DataSourceSpec):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("model_type", "a data split must be a mapping with source, split and batch_size, "
                                                "got {value}", {"value": repr(value)})
    kind = source_types().get(value.get("source")) if isinstance(value.get("source"), str) else None
    if kind is None:
        _SourceName.model_validate({"source": value["source"]} if "source" in value else {}, context=info.context)
        raise AssertionError("unreachable: _SourceName accepted an unknown source")  # pragma: no cover
    return kind.spec.model_validate(value, context=info.context)


def _serialize(value: DataSourceSpec, info: Any) -> dict[str, Any]:
    # serialise as the concrete class (the declared base would drop its fields)
    return value.model_dump(mode=info.mode, exclude_unset=info.exclude_unset,
                            exclude_defaults=info.exclude_defaults, exclude_none=info.exclude_none)


class _SourceSchema:
    """JSON Schema of a split: one variant per spec class, ``source`` narrowed to its names."""

    def __init__(self, nested: bool = False, exclude: tuple[str, ...] = ()):
        self.nested = nested  # inside multi: multi itself is not offered (no nesting)
        self.exclude = exclude  # other sources not offered (a wrapper of one image source: itself)

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        by_class: dict[type, list[str]] = {}
        for name, kind in source_types().items():
            if not (self.nested and name == "multi") and name not in self.exclude:
                by_class.setdefault(kind.spec, []).append(name)
        variants = [{"allOf": [self._variant(cls, handler)], "properties": {"source": {"enum": names}}}
                    for cls, names in by_class.items()]
        return {"oneOf": variants}

    def _variant(self, cls: type, handler: Any) -> dict[str, Any]:
        schema = handler(cls.__pydantic_core_schema__)
        if not self.nested:
            return schema
        # a sub-source takes split and batch_size from the mapping around it (multi, image_features)
        schema = copy.deepcopy(handler.resolve_ref_schema(schema) if "$ref" in schema else schema)
        schema["required"] = [k for k in schema.get("required", []) if k not in ("split", "batch_size")]
        return schema


# A field holding any registered source's spec: validated by the class its `source` names.
AnySource = Annotated[DataSourceSpec, PlainValidator(_dispatch), PlainSerializer(_serialize), _SourceSchema()]
# The same, for the sub-sources of `multi` (whose schema must not recurse into multi).
SubSource = Annotated[DataSourceSpec, PlainValidator(_dispatch), PlainSerializer(_serialize), _SourceSchema(nested=True)]
# The same, for the one image source that `image_features` wraps (neither multi nor itself).
ImageSubSource = Annotated[DataSourceSpec, PlainValidator(_dispatch), PlainSerializer(_serialize),
                           _SourceSchema(nested=True, exclude=("image_features",))]


def source_spec(**keys: Any) -> DataSourceSpec:
    """Validate one split's keys with the spec class of its ``source`` (Python API and tests)."""
    return DataSpec.model_validate({"train": keys}).train  # type: ignore[return-value]


class DataSpec(Spec):
    """The ``data:`` section: a train split, a test split, or both."""

    train: AnySource | None = Field(None, description="batches for training (TRAIN phase)")
    test: AnySource | None = Field(None, description="batches for testing (TEST phase)")

    @model_validator(mode="after")
    def _test_is_not_augmented(self) -> DataSpec:
        if self.test is None:
            return self
        for source, path in _within(self.test, ("test",)):  # multi's sources, image_features' of: too
            for key in TRAIN_ONLY:
                if getattr(source, key, None):
                    raise FieldError(f"{key} augments training images only: a test sees each image as it is, every "
                                     "time; remove it here (or move it to data.train)", (*path, key))
        return self


def _within(source: DataSourceSpec, path: tuple) -> Iterator[tuple[DataSourceSpec, tuple]]:
    """``source`` and every source it wraps (a field holding a source or a list of them), with key paths."""
    yield source, path
    for name in type(source).model_fields:
        value = getattr(source, name)
        for i, sub in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if isinstance(sub, DataSourceSpec):
                yield from _within(sub, (*path, name) if i is None else (*path, name, i))
