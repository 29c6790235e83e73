"""SolverSpec: the schema of a solver file (Caffe's SolverParameter names), and loading it.

Loading resolves the ``net`` (a path relative to the solver file, or an inline
net mapping as in a run's ``config.yaml``; ``--set net.KEY=...`` applies to either),
validates it, and checks the
cross-field rules Caffe enforces at run time (a test interval without test data,
a snapshot without a prefix, a momentum on AdaGrad...) as located errors.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator

from netcfg.data.spec import DataSpec
from netcfg.errors import ConfigError, ConfigErrors
from netcfg.net.spec import NetSpec, net_from_source
from netcfg.solver.lr_policy import OPTIONAL, POLICIES
from netcfg.solver.weights_spec import WeightsField, regex_errors, rule_errors
from netcfg.overrides import FlagOverride, apply_net_sets, apply_overrides
from netcfg.source import YAML_SUFFIXES, Source, document_kind, load_yaml
from netcfg.spec import Spec, validate

__all__ = ["SolverSpec", "BestSpec", "load_solver", "solver_from_source", "OPTIMIZERS"]

OPTIMIZERS = ("SGD", "Nesterov", "Adam", "AdamW", "RMSProp", "AdaGrad", "AdaDelta")
# which of momentum/momentum2/rms_decay each optimizer reads (delta: all but SGD/Nesterov)
_USES = {
    "SGD": {"momentum"}, "Nesterov": {"momentum"}, "Adam": {"momentum", "momentum2", "delta"},
    "AdamW": {"momentum", "momentum2", "delta"}, "RMSProp": {"momentum", "rms_decay", "delta"},
    "AdaGrad": {"delta"}, "AdaDelta": {"momentum", "delta"},
}


class LogSpec(Spec):
    """Where metrics go besides metrics.jsonl."""

    tensorboard: bool = Field(False, description="also write TensorBoard scalars to <run>/tensorboard "
                              "(needs the tensorboard package: pip install 'netcfg[tensorboard]')")


class BestSpec(Spec):
    """Which test result marks the best snapshot (``snapshot_best``)."""

    metric: str = Field(..., min_length=1, description="a scalar output of the TEST net (accuracy, loss, ...)")
    mode: Literal["max", "min"] = Field(..., description="max: higher is better (accuracy); min: lower (loss)")
    patience: int | None = Field(None, ge=1, description="early stopping: end training once the metric has not "
                                 "improved for this many tests (the best snapshot holds the best weights)")


class EmaSpec(Spec):
    """An exponential moving average of the weights, which tests and snapshots use (``ema``)."""

    decay: float = Field(0.9999, gt=0, lt=1, description="the average keeps this much of itself at each update")
    warmup: int = Field(2000, ge=0, description="the decay ramps up as decay * (1 - exp(-updates / warmup)) "
                        "(Ultralytics' tau), so early averages forget the random start; 0: constant decay")


class SolverSpec(Spec):
    """A solver file: what to train, on which data, with which optimizer and schedule."""

    net: str | dict[str, Any] = Field(..., description="net file (path relative to this file) or an inline net")
    data: DataSpec = Field(default_factory=DataSpec, description="train and test data sources")
    # optimizer
    type: Literal[OPTIMIZERS] = Field("SGD", description="optimizer")  # type: ignore[valid-type]
    base_lr: float = Field(..., gt=0, description="base learning rate")
    momentum: float | None = Field(None, ge=0, lt=1, description="SGD/Nesterov momentum; Adam beta1; RMSProp momentum; AdaDelta rho")
    momentum2: float | None = Field(None, ge=0, lt=1, description="Adam/AdamW beta2 (default 0.999)")
    delta: float | None = Field(None, gt=0, description="numerical-stability epsilon (Adam, RMSProp, AdaGrad, AdaDelta)")
    rms_decay: float | None = Field(None, ge=0, lt=1, description="RMSProp squared-gradient decay (default 0.99)")
    weight_decay: float = Field(0.0, ge=0, description="regularisation strength, times each blob's decay_mult")
    regularization_type: Literal["L2", "L1"] = Field("L2", description="L2 (weight decay) or L1 (Caffe's sign penalty)")
    clip_gradients: float | None = Field(None, gt=0, description="clip the global gradient L2 norm to this value")
    # schedule
    lr_policy: Literal[tuple(POLICIES)] = Field("fixed", description="learning-rate policy")  # type: ignore[valid-type]
    gamma: float | None = Field(None, description="step/exp/inv/multistep/sigmoid: decay factor")
    power: float | None = Field(None, description="inv/poly: exponent")
    stepsize: int | None = Field(None, ge=1, description="step: iterations per drop; sigmoid: centre")
    stepvalue: list[int] = Field(default_factory=list, description="multistep: iterations at which the rate drops")
    min_lr: float = Field(0.0, ge=0, description="cosine/linear: the final learning rate")
    warmup_iter: int = Field(0, ge=0, description="linear warm-up over this many iterations")
    warmup_start: float = Field(0.0, ge=0, le=1, description="warm-up starts at this fraction of the rate")
    max_iter: int = Field(..., ge=0, description="iterations to train")
    iter_size: int = Field(1, ge=1, le=1_000_000, description="accumulate gradients over this many batches per update")
    # reporting, testing, snapshots
    display: int = Field(100, ge=0, description="log the training loss every N iterations (0: never)")
    average_loss: int = Field(1, ge=1, description="the displayed loss is averaged over the last N iterations")
    debug_info: bool = Field(False, description="Caffe's debug_info: on each displayed iteration, log every layer's "
                             "mean |value| of its tops, parameters, gradients and updates")
    test_interval: int = Field(0, ge=0, description="test every N iterations (0: never)")
    test_iter: int | None = Field(None, ge=1, description="test batches per test; default: the whole test split")
    test_initialization: bool = Field(True, description="also test before the first iteration")
    snapshot: int = Field(0, ge=0, description="write a snapshot every N iterations (0: only at the end)")
    snapshot_prefix: str | None = Field(None, min_length=1, description="snapshot file names start with this")
    snapshot_after_train: bool = Field(True, description="write a snapshot when training ends")
    snapshot_keep: int | None = Field(None, ge=1, description="keep only the N newest <prefix>_iter_<N> snapshots, "
                                      "deleting older ones once a new one is written (default: keep all, as Caffe)")
    snapshot_best: BestSpec | None = Field(None, description="after each test, write <prefix>_best.safetensors and "
                                           ".solverstate when {metric: NAME, mode: max|min} improved")
    ema: EmaSpec | None = Field(None, description="average the weights ({decay: 0.9999, warmup: 2000}, or true "
                                "for those): tests, snapshots and exports use the average",
                                json_schema_extra=lambda s: s["anyOf"].append({"type": "boolean"}))
    # engine
    random_seed: int = Field(1, ge=0, le=2**64 - 1, description="seeds weights, data order and dropout; a CPU run repeats bit for bit")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto, cpu, cuda, cuda:N")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp32, or autocast to bf16/fp16 (fp16 on CUDA, with a grad scaler)")
    compile: bool = Field(False, description="torch.compile the net (slower start, faster steps)")
    memory_format: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="image tensor layout; auto: channels_last for nets with 2-D convolutions (faster on CPU and CUDA)")
    weights: WeightsField = Field(None, description="initialise from these weights (.safetensors or a .pt/.pth "
                                  "state_dict) by layer name, or a list of rules {file, include, exclude, "
                                  "rename_map, rename, strict} (docs/finetuning.md)")
    freeze: list[str] = Field(default_factory=list, description="regexes (re.match) over parameter names "
                              "<layer>.<blob>: those are not trained, and matched BatchNorm statistics stay fixed")
    train_stages: list[str] = Field(default_factory=list, description="stages active in the TRAIN net")
    test_stages: list[str] = Field(default_factory=list, description="stages active in the TEST net")
    log: LogSpec = Field(default_factory=LogSpec, description="extra metric outputs: {tensorboard: true}")

    _source: Source | None = PrivateAttr(None)
    _dir: Path = PrivateAttr(Path("."))
    _net: NetSpec | None = PrivateAttr(None)

    @classmethod
    def unknown_key_hint(cls, key: str) -> str | None:
        if key in NetSpec.model_fields:  # layers: ..., inputs: ... written into the solver, or --set layers.x=...
            return f"'{key}' is a key of the net, not of the solver: write it in the net, or --set net.{key}..."
        return None

    @field_validator("ema", mode="before")
    @classmethod
    def _ema_switch(cls, v: Any) -> Any:
        # ema: true takes the defaults, ema: false none (as Ultralytics' and timm's on/off switches)
        return ({} if v else None) if isinstance(v, bool) else v

    @field_validator("snapshot_prefix")
    @classmethod
    def _file_name(cls, v: str | None) -> str | None:
        # snapshots land in the run directory; a path here would write them elsewhere
        if v is not None and (set(v) & {"/", "\\", "\0"} or v.strip(".") == ""):
            raise ValueError(f"snapshot_prefix must be a file name without '/', got {v!r}; "
                             "snapshots are written in the run directory")
        return v

    @property
    def net_spec(self) -> NetSpec:
        if self._net is None:
            raise RuntimeError("SolverSpec.net_spec is set by load_solver")
        return self._net

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths in this file resolve against."""
        return self._dir

    def locate(self, err: ConfigError) -> ConfigError:
        return self._source.locate(err) if self._source is not None else err


def cross_checks(s: SolverSpec) -> list[ConfigError]:
    """Caffe's run-time checks, done at load time with the key they concern."""
    errs = []
    if s.test_interval and s.data.test is None:
        errs.append(ConfigError("test_interval is set but data has no test split", ("test_interval",),
                                hint="add data.test, or set test_interval: 0"))
    if s.data.train is None and s.max_iter > 0:
        errs.append(ConfigError("data has no train split to train on", ("data",), hint="add data.train"))
    if s.snapshot and s.snapshot_prefix is None:
        errs.append(ConfigError("snapshot is set but snapshot_prefix is not", ("snapshot",),
                                hint="add e.g. snapshot_prefix: lenet"))
    for key in ("momentum", "momentum2", "rms_decay", "delta"):
        if getattr(s, key) is not None and key not in _USES[s.type]:
            errs.append(ConfigError(f"{s.type} does not use {key}", (key,),
                                    hint=f"{s.type} reads: {', '.join(sorted(_USES[s.type])) or 'no extra hyperparameters'}"))
    for key in ("gamma", "power", "stepsize", "stepvalue", "min_lr"):  # written, but unread: a likely slip
        readers = [p for p in POLICIES if key in POLICIES[p] + OPTIONAL.get(p, ())]
        if key in s.model_fields_set and s.lr_policy not in readers:
            errs.append(ConfigError(f"lr_policy {s.lr_policy} does not use {key}", (key,),
                                    hint=f"{key} is read by lr_policy {', '.join(readers)}; remove it, or change lr_policy"))
    if s.snapshot_best is not None and not s.test_interval:
        errs.append(ConfigError("snapshot_best is set but the run never tests (test_interval is 0)", ("snapshot_best",),
                                hint="set test_interval: N (and data.test), or remove snapshot_best"))
    if s.debug_info and not s.display:  # Caffe's too: the layers are logged on displayed iterations only
        errs.append(ConfigError("debug_info is set but display is 0, so no iteration is displayed and nothing "
                                "is logged", ("debug_info",),
                                hint="set display: N (display: 1 logs every iteration), or remove debug_info"))
    if "warmup_start" in s.model_fields_set and not s.warmup_iter:
        errs.append(ConfigError("warmup_start is set but warmup_iter is not", ("warmup_start",),
                                hint="add warmup_iter: N (iterations of warm-up), or remove warmup_start"))
    for key in POLICIES[s.lr_policy]:
        value = getattr(s, key)
        if value is None or value == []:
            errs.append(ConfigError(f"lr_policy {s.lr_policy} needs {key}", ("lr_policy",), hint=f"add {key}: ..."))
    if s.type == "Nesterov" and not s.momentum:
        errs.append(ConfigError("solver type Nesterov needs momentum > 0", ("momentum",) if s.momentum is not None
                                else ("type",), hint="add momentum: 0.9, or use type: SGD without momentum"))
    if s.type == "AdamW" and s.regularization_type == "L1" and s.weight_decay:
        errs.append(ConfigError("AdamW decays weights decoupled from the gradient, which has no L1 form",
                                ("regularization_type",), hint="use regularization_type: L2, or type: Adam"))
    if s.gamma is not None and s.gamma < 0 and s.lr_policy in ("step", "multistep", "exp", "inv"):
        errs.append(ConfigError(f"lr_policy {s.lr_policy} needs gamma >= 0, got {s.gamma}", ("gamma",),
                                hint="a negative gamma makes the learning rate change sign (exp, step) or "
                                     "undefined (inv: (1 + gamma * iter) ** -power)"))
    if s.stepvalue != sorted(s.stepvalue):
        errs.append(ConfigError(f"stepvalue must increase, got {s.stepvalue}", ("stepvalue",)))
    # max_iter 0 trains nothing (netcfg test sets it): a warm-up it never reaches is no slip
    if s.warmup_iter and s.max_iter and s.warmup_iter >= s.max_iter:
        errs.append(ConfigError(f"warmup_iter {s.warmup_iter} is not below max_iter {s.max_iter}", ("warmup_iter",)))
    if s.precision == "fp16" and s.device == "cpu":
        errs.append(ConfigError("fp16 autocast needs CUDA", ("precision",), hint="use bf16 on the CPU"))
    if s.log.tensorboard and importlib.util.find_spec("tensorboard") is None:
        errs.append(ConfigError("tensorboard is true but the tensorboard package is not installed", ("log", "tensorboard"),
                                hint="pip install 'netcfg[tensorboard]', or set tensorboard: false"))
    errs += rule_errors(s.weights) + regex_errors(s.freeze, ("freeze",))  # weights rules, freeze (weights.py)
    return errs


def solver_from_source(src: Source, base_dir: Path) -> SolverSpec:
    """Validate a located solver document and load the net it names."""
    if document_kind(src.data) == "net":  # one error, not a missing key per solver key
        raise ConfigErrors([src.locate(ConfigError(
            "this is a net file (it has layers:), but a solver file is needed here", ("layers",),
            hint="a solver file names the net (net: <this file>) and its data:, base_lr and max_iter; see solvers/"),
            at_key=True)])
    spec = validate(SolverSpec, src)
    spec._source, spec._dir = src, base_dir
    errors = [spec.locate(e) for e in cross_checks(spec)]
    try:
        spec._net = _load_net(spec, src, base_dir)
    except ConfigErrors as e:
        errors += e.errors
    except ConfigError as e:
        errors.append(e)
    else:
        errors += [spec.locate(e) for e in net_checks(spec)]
    if errors:
        raise ConfigErrors(errors)
    return spec


def net_checks(s: SolverSpec) -> list[ConfigError]:
    """What the solver's keys ask of the net it loaded."""
    stages = [s.net_spec.stage_error(getattr(s, key), key) for key in ("train_stages", "test_stages")]
    return [e for e in stages if e is not None] + _fp16_errors(s)


def _fp16_errors(s: SolverSpec) -> list[ConfigError]:
    half = [name for name, blob in s.net_spec.inputs.items() if blob.dtype == "float16"]
    if s.precision != "fp16" or not half:
        return []
    # torch's GradScaler refuses float16 gradients ('Attempting to unscale FP16 gradients'), at the first update
    names = ", ".join(f"'{n}'" for n in half)
    return [ConfigError(f"fp16 scales the loss for float32 weights, but the net's input {names} is declared float16, "
                        "which builds its weights in float16: the gradient scaler cannot unscale their gradients",
                        ("precision",), hint=f"declare {names} float32 and keep precision: fp16, which computes in "
                                             "float16 and updates float32 weights; or set precision: fp32 "
                                             "to train the float16 weights as declared")]


def _load_net(spec: SolverSpec, src: Source, base_dir: Path) -> NetSpec:
    if isinstance(spec.net, dict):  # inline (a run's config.yaml): positions are in this file
        return net_from_source(src.under("net"))
    path = Path(spec.net).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        found = path.is_file()
    except OSError as e:  # a name too long, a folder without permission: Path.is_file raises these
        raise spec.locate(ConfigError(f"cannot read the net file {path}: {e.strerror}", ("net",))) from None
    if not found:
        near = sorted(p.name for p in path.parent.glob("*.y*ml") if p.suffix in YAML_SUFFIXES) \
            if path.parent.is_dir() else []  # net.yml beside a mistyped net.yaml is the likeliest fix
        hint = f"files there: {', '.join(near[:8])}" if near else f"{path.parent} has no .yaml or .yml files"
        raise spec.locate(ConfigError(f"net file not found: {path}", ("net",), hint=hint))
    return net_from_source(apply_net_sets(src, load_yaml(path)))  # with the solver's --set net.KEY=...


def load_solver(path: str | Path, overrides: Sequence[str | FlagOverride] = ()) -> SolverSpec:
    """Read and validate a solver file (with ``--set`` overrides) and its net; a run
    directory stands for its config.yaml."""
    from netcfg.solver.rundir import run_config  # rundir imports this module

    path = run_config(path)
    src = load_yaml(path)
    if overrides:
        apply_overrides(src, overrides)
    return solver_from_source(src, Path(path).resolve().parent)
