"""The part of Caffe's caffe.proto the importer reads, and typed decoding of parsed text.

The schema is data: one line of ``field:type`` words per message, ``*`` marking a
repeated field. Decoding checks every field against it as protobuf would (unknown
names with the nearest spelling, wrong value kinds, a singular field given twice)
and yields ``Obj``s: typed values that remember where each came from, so the
converter's own errors point at the .prototxt too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from netcfg.caffe.parser import Message, Scalar
from netcfg.errors import ConfigError, did_you_mean

__all__ = ["Obj", "decode", "SCHEMA"]

_ENGINE = "enum(DEFAULT|CAFFE|CUDNN)"
_FILLER = "FillerParameter"
# Parameters of Caffe layer types netcfg has no counterpart for: accepted unchecked, the
# layer type itself is reported.
_OPAQUE = ("hdf5_output_param python_param recurrent_param "
           "window_data_param").split()

SCHEMA_TEXT: dict[str, str] = {
    "NetParameter": "name:string input:*string input_shape:*BlobShape input_dim:*int force_backward:bool "
                    "state:NetState debug_info:bool layer:*LayerParameter layers:*any",
    "BlobShape": "dim:*int",
    "NetState": "phase:enum(TRAIN|TEST) level:int stage:*string",
    "NetStateRule": "phase:enum(TRAIN|TEST) min_level:int max_level:int stage:*string not_stage:*string",
    "ParamSpec": "name:string share_mode:enum(STRICT|PERMISSIVE) lr_mult:float decay_mult:float",
    "FillerParameter": "type:string value:float min:float max:float mean:float std:float sparse:int "
                       "variance_norm:enum(FAN_IN|FAN_OUT|AVERAGE)",
    "LayerParameter": (
        "name:string type:string bottom:*string top:*string phase:enum(TRAIN|TEST) loss_weight:*float "
        "param:*ParamSpec blobs:*any propagate_down:*bool include:*NetStateRule exclude:*NetStateRule "
        "transform_param:TransformationParameter loss_param:LossParameter "
        "accuracy_param:AccuracyParameter argmax_param:ArgMaxParameter batch_norm_param:BatchNormParameter "
        "bias_param:BiasParameter clip_param:ClipParameter concat_param:ConcatParameter "
        "contrastive_loss_param:ContrastiveLossParameter convolution_param:ConvolutionParameter "
        "crop_param:CropParameter data_param:DataParameter dropout_param:DropoutParameter "
        "dummy_data_param:DummyDataParameter eltwise_param:EltwiseParameter elu_param:ELUParameter "
        "embed_param:EmbedParameter exp_param:ExpParameter flatten_param:FlattenParameter "
        "hdf5_data_param:HDF5DataParameter hinge_loss_param:HingeLossParameter "
        "image_data_param:ImageDataParameter infogain_loss_param:InfogainLossParameter inner_product_param:InnerProductParameter "
        "input_param:InputParameter log_param:LogParameter lrn_param:LRNParameter "
        "memory_data_param:MemoryDataParameter mvn_param:MVNParameter parameter_param:ParameterParameter "
        "pooling_param:PoolingParameter power_param:PowerParameter "
        "prelu_param:PReLUParameter relu_param:ReLUParameter reduction_param:ReductionParameter "
        "reshape_param:ReshapeParameter "
        "scale_param:ScaleParameter sigmoid_param:SigmoidParameter softmax_param:SoftmaxParameter "
        "slice_param:SliceParameter spp_param:SPPParameter swish_param:SwishParameter tanh_param:TanHParameter "
        "threshold_param:ThresholdParameter tile_param:TileParameter " + " ".join(f"{p}:any" for p in _OPAQUE)),
    "TransformationParameter": "scale:float mirror:bool crop_size:uint mean_file:string mean_value:*float "
                               "force_color:bool force_gray:bool",
    "LossParameter": "ignore_label:int normalization:enum(FULL|VALID|BATCH_SIZE|NONE) normalize:bool",
    "AccuracyParameter": "top_k:uint axis:int ignore_label:int",
    "ArgMaxParameter": "out_max_val:bool top_k:uint axis:int",
    "BatchNormParameter": "use_global_stats:bool moving_average_fraction:float eps:float",
    "BiasParameter": f"axis:int num_axes:int filler:{_FILLER}",
    "ClipParameter": "min:float max:float",
    "ConcatParameter": "axis:int concat_dim:uint",
    "ContrastiveLossParameter": "margin:float legacy_version:bool",
    "ConvolutionParameter": f"num_output:uint bias_term:bool pad:*uint kernel_size:*uint stride:*uint "
                            f"dilation:*uint pad_h:uint pad_w:uint kernel_h:uint kernel_w:uint stride_h:uint "
                            f"stride_w:uint group:uint weight_filler:{_FILLER} bias_filler:{_FILLER} "
                            f"engine:{_ENGINE} axis:int force_nd_im2col:bool",
    "CropParameter": "axis:int offset:*uint",
    "DataParameter": "source:string batch_size:uint rand_skip:uint backend:enum(LEVELDB|LMDB) scale:float "
                     "mean_file:string crop_size:uint mirror:bool force_encoded_color:bool prefetch:uint",
    "DropoutParameter": "dropout_ratio:float scale_train:bool",
    "DummyDataParameter": f"data_filler:*{_FILLER} shape:*BlobShape num:*uint channels:*uint height:*uint "
                          "width:*uint",
    "EltwiseParameter": "operation:enum(PROD|SUM|MAX) coeff:*float stable_prod_grad:bool",
    "ELUParameter": "alpha:float",
    "EmbedParameter": f"num_output:uint input_dim:uint bias_term:bool weight_filler:{_FILLER} "
                      f"bias_filler:{_FILLER}",
    "ExpParameter": "base:float scale:float shift:float",
    "FlattenParameter": "axis:int end_axis:int",
    "HDF5DataParameter": "source:string batch_size:uint shuffle:bool",
    "HingeLossParameter": "norm:enum(L1|L2)",
    "ImageDataParameter": "source:string batch_size:uint rand_skip:uint shuffle:bool new_height:uint "
                          "new_width:uint is_color:bool scale:float mean_file:string crop_size:uint mirror:bool "
                          "root_folder:string",
    "InfogainLossParameter": "source:string axis:int",
    "InnerProductParameter": f"num_output:uint bias_term:bool weight_filler:{_FILLER} bias_filler:{_FILLER} "
                             "axis:int transpose:bool",
    "InputParameter": "shape:*BlobShape",
    "LogParameter": "base:float scale:float shift:float",
    "LRNParameter": f"local_size:uint alpha:float beta:float norm_region:enum(ACROSS_CHANNELS|WITHIN_CHANNEL) "
                    f"k:float engine:{_ENGINE}",
    "MemoryDataParameter": "batch_size:uint channels:uint height:uint width:uint",
    "MVNParameter": "normalize_variance:bool across_channels:bool eps:float",
    "ParameterParameter": "shape:BlobShape",
    "PoolingParameter": f"pool:enum(MAX|AVE|STOCHASTIC) pad:uint pad_h:uint pad_w:uint kernel_size:uint "
                        f"kernel_h:uint kernel_w:uint stride:uint stride_h:uint stride_w:uint engine:{_ENGINE} "
                        "global_pooling:bool round_mode:enum(CEIL|FLOOR)",
    "PowerParameter": "power:float scale:float shift:float",
    "PReLUParameter": f"filler:{_FILLER} channel_shared:bool",
    "ReLUParameter": f"negative_slope:float engine:{_ENGINE}",
    "ReductionParameter": "operation:enum(SUM|ASUM|SUMSQ|MEAN) axis:int coeff:float",
    "ReshapeParameter": "shape:BlobShape axis:int num_axes:int",
    "ScaleParameter": f"axis:int num_axes:int filler:{_FILLER} bias_term:bool bias_filler:{_FILLER}",
    "SigmoidParameter": f"engine:{_ENGINE}",
    "SoftmaxParameter": f"engine:{_ENGINE} axis:int",
    "SliceParameter": "axis:int slice_point:*uint slice_dim:uint",
    "SPPParameter": f"pyramid_height:uint pool:enum(MAX|AVE|STOCHASTIC) engine:{_ENGINE}",
    "SwishParameter": "beta:float",
    "TanHParameter": f"engine:{_ENGINE}",
    "ThresholdParameter": "threshold:float",
    "TileParameter": "axis:int tiles:int",
    "SolverParameter": (
        "net:string net_param:NetParameter train_net:string test_net:*string train_net_param:NetParameter "
        "test_net_param:*NetParameter train_state:NetState test_state:*NetState test_iter:*int "
        "test_interval:int test_compute_loss:bool test_initialization:bool base_lr:float display:int "
        "average_loss:int max_iter:int iter_size:int lr_policy:string gamma:float power:float momentum:float "
        "weight_decay:float regularization_type:string stepsize:int stepvalue:*int clip_gradients:float "
        "snapshot:int snapshot_prefix:string snapshot_diff:bool snapshot_format:enum(HDF5|BINARYPROTO) "
        "solver_mode:enum(CPU|GPU) device_id:int random_seed:int type:string delta:float momentum2:float "
        "rms_decay:float debug_info:bool snapshot_after_train:bool "
        "solver_type:enum(SGD|NESTEROV|ADAGRAD|RMSPROP|ADADELTA|ADAM) layer_wise_reduce:bool weights:*string"),
}


# a solver where a net is expected, and the other way round: the wrong command, not a typo
_SWAPPED = {
    "NetParameter": ("SolverParameter", "solver", "import a solver with --solver: netcfg import-caffe --solver SOLVER"),
    "SolverParameter": ("NetParameter", "net", "import a net without --solver: netcfg import-caffe NET.prototxt"),
}


def _compile(text: str) -> dict[str, tuple[str, bool]]:
    out = {}
    for word in text.split():
        name, kind = word.split(":", 1)
        out[name] = (kind.lstrip("*"), kind.startswith("*"))
    return out


SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {k: _compile(v) for k, v in SCHEMA_TEXT.items()}


@dataclass
class Obj:
    """A decoded message: typed values in file order, each with the position of its value."""

    type: str
    file: str
    path: tuple[str, ...]
    line: int
    col: int
    entries: list[tuple[str, Any, int, int]] = field(default_factory=list)  # name, value, line, col

    def has(self, name: str) -> bool:
        return any(e[0] == name for e in self.entries)

    def get(self, name: str, default: Any = None) -> Any:
        for e in self.entries:
            if e[0] == name:
                return e[1]
        return default

    def all(self, name: str) -> list[Any]:
        return [e[1] for e in self.entries if e[0] == name]

    def names(self) -> list[str]:
        return list(dict.fromkeys(e[0] for e in self.entries))

    def pos(self, name: str | None = None, index: int = 0) -> tuple[int, int]:
        """Line and column of the ``index``-th value of ``name`` (the message itself if absent)."""
        hits = [(e[2], e[3]) for e in self.entries if e[0] == name]
        return hits[min(index, len(hits) - 1)] if hits else (self.line, self.col)

    def error(self, message: str, name: str | None = None, *, hint: str | None = None, index: int = 0) -> ConfigError:
        """A ConfigError at field ``name`` of this message (or at the message)."""
        line, col = self.pos(name, index)
        path = self.path + ((name,) if name and self.has(name) else ())
        return ConfigError(message, path, hint=hint, file=self.file, line=line, col=col)


def decode(msg: Message, type_name: str, file: str, path: tuple[str, ...] = ()) -> Obj:
    """Check ``msg`` against the schema of ``type_name`` and decode its values."""
    schema = SCHEMA[type_name]
    obj = Obj(type_name, file, path, msg.line, msg.col)
    seen: dict[str, tuple[int, int]] = {}
    counts: dict[str, int] = {}
    for f in msg.fields:
        where = ConfigError("", path + (f.name,), file=file, line=f.line, col=f.col)
        if f.name not in schema:
            where.message = f"unknown field '{f.name}' in {type_name}"
            where.hint = did_you_mean(f.name, schema, show_all=0) or f"valid: {', '.join(sorted(schema))}"
            if not path and type_name in _SWAPPED and f.name in SCHEMA[_SWAPPED[type_name][0]]:
                other, what, hint = _SWAPPED[type_name]
                where.message = (f"this file is a Caffe {what}, not a {_SWAPPED[other][1]}: "
                                 f"'{f.name}' is a field of {other}")
                where.hint = hint
            raise where
        kind, repeated = schema[f.name]
        if not repeated and f.name in seen:
            where.message = (f"'{f.name}' is given twice (first at line {seen[f.name][0]}); "
                             f"it is not a repeated field of {type_name}")
            raise where
        seen.setdefault(f.name, (f.line, f.col))
        index = counts[f.name] = counts.get(f.name, -1) + 1
        label = f"{f.name}[{index}]" if repeated else f.name
        if isinstance(f.value, Message):
            if kind in SCHEMA:
                if type_name == "NetParameter" and f.name == "layer":
                    label = f"layer[{_layer_label(f.value, index)}]"
                value: Any = decode(f.value, kind, file, path + (label,))
                value.line, value.col = f.line, f.col  # errors about the whole message point at its name
            elif kind == "any":
                value = f.value
            else:
                where.message = f"'{f.name}' takes a value ({_kind_text(kind)}), not a {{ }} block"
                where.hint = f"write '{f.name}: ...'"
                raise where
            obj.entries.append((f.name, value, f.line, f.col))
        else:
            if kind in SCHEMA or kind == "any":
                where.message = f"'{f.name}' is a message: write '{f.name} {{ ... }}'"
                raise where
            obj.entries.append((f.name, _scalar(f.value, kind, f.name, file, path + (label,)), f.value.line, f.value.col))
    return obj


def _layer_label(msg: Message, index: int) -> str:
    for f in msg.fields:
        if f.name == "name" and isinstance(f.value, Scalar) and f.value.kind == "string":
            return str(f.value.value)
    return str(index)


def _kind_text(kind: str) -> str:
    if kind.startswith("enum("):
        return "one of " + ", ".join(kind[5:-1].split("|"))
    return {"string": "a quoted string", "int": "an integer", "uint": "a non-negative integer",
            "float": "a number", "bool": "true or false"}[kind]


def _scalar(s: Scalar, kind: str, name: str, file: str, path: tuple[str, ...]) -> Any:
    def bad(hint: str | None = None) -> ConfigError:
        return ConfigError(f"'{name}' must be {_kind_text(kind)}, got {s.text}", path, hint=hint,
                           file=file, line=s.line, col=s.col)

    if kind == "string":
        if s.kind != "string" and name == "type" and s.text.isupper():
            raise bad(hint="unquoted upper-case layer types are Caffe's deprecated V1 format; upgrade the file "
                           "with Caffe's tool: upgrade_net_proto_text OLD.prototxt NEW.prototxt")
        if s.kind != "string":
            raise bad(hint=f'quote it: "{s.text}"')
        return s.value
    if kind in ("int", "uint"):
        if s.kind != "number" or not isinstance(s.value, int):
            raise bad()
        if kind == "uint" and s.value < 0:
            raise bad()
        return s.value
    if kind == "float":
        if s.kind == "number":
            return s.value
        if s.kind == "ident" and s.text.lower() in ("inf", "infinity", "nan"):
            return math.inf if s.text.lower().startswith("inf") else math.nan
        raise bad()
    if kind == "bool":
        if s.kind == "ident" and s.text in ("true", "True", "t"):
            return True
        if s.kind == "ident" and s.text in ("false", "False", "f"):
            return False
        if s.kind == "number" and s.value in (0, 1) and isinstance(s.value, int):
            return bool(s.value)
        raise bad()
    choices = re.fullmatch(r"enum\((.*)\)", kind).group(1).split("|")
    if s.kind == "ident" and s.text in choices:
        return s.text
    hint = did_you_mean(str(s.value), choices)
    if s.kind == "string" and s.value in choices:
        hint = f"enum values are written without quotes: {name}: {s.value}"
    raise bad(hint=hint)
