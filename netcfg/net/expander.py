"""The engine of block templates: block instances -> explicit layers with scoped names.

``Expander`` walks a net's layer list; an entry with ``block:`` is replaced by the
block's layers, once per repeat, after ``${...}`` substitution (netcfg.net.expr) and
``if:`` filtering. Layer names, blob names and share names are scoped to the
instance; for each layer it emits it records the template path it came from and
the instance, which netcfg.net.templates turns into error locations.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from netcfg.errors import ConfigError, KeyPath, did_you_mean
from netcfg.net.block_spec import BlockSpec, BlockUse
from netcfg.net.expr import RESERVED, ExprError, has_expr, names, substitute
from netcfg.net.layer_dicts import add_rules, in_place_blob, is_layer_list, put_key, rename_blob, scope_shares, tops, walk
from netcfg.net.template_hints import divide_hint, param_values
from netcfg.source import Source, value_at
from netcfg.spec import errors_from_pydantic

__all__ = ["MAX_LAYERS", "Ctx", "Expander"]

MAX_LAYERS = 100_000  # an expansion larger than this is a mistake (repeat: 1000000)
MAX_DEPTH = 16


class _Outer(str):
    """A blob name from outside the block (``${bottom}``): never scoped."""


@dataclass
class Ctx:
    """Where a list of layers is being expanded."""

    scope: str = ""               # prefix of layer names
    sep: str = "."                # "." in a net's layers, "_" in a container's inner list (no nesting there)
    share: str = ""               # prefix of `param: [{name}]` share names
    label: str | None = None      # the instance, for messages
    stack: tuple[str, ...] = ()   # blocks being expanded, for recursion
    in_block: bool = False        # `if:` is read only inside blocks
    local: set[str] = field(default_factory=set)  # blob names produced inside this instance

    def name(self, n: Any) -> Any:
        return f"{self.scope}{self.sep}{n}" if self.scope and isinstance(n, str) else n

    def blob(self, n: Any) -> Any:
        if isinstance(n, _Outer) or not isinstance(n, str):
            return str(n) if isinstance(n, str) else n
        if self.scope and n.startswith("/"):
            return n[1:]
        return f"{self.scope}.{n}" if self.scope and n in self.local else n


class Expander:
    """Expands the layer lists of one net file, collecting every error it finds."""

    def __init__(self, src: Source):
        self.src = src
        self.blocks: dict[str, BlockSpec] = {}
        self.errors: list[ConfigError] = []
        self.origin: dict[int, dict[tuple, tuple[KeyPath, str | None]]] = {}  # id(layer) -> {(): where, ("top",): ...}
        self.count = 0
        self.envs: dict[str, dict[str, tuple[Any, KeyPath | None]]] = {}
        self.broken: set[str] = set()  # blocks whose definition has errors (reported once, at the block)

    def error(self, msg: str, path: KeyPath, label: str | None = None, hint: str | None = None, at_key=False) -> None:
        where = param_values(self.src, self.envs, label, path) if label else ""
        err = ConfigError(msg + (f" (in {label}{where})" if label else ""), path, hint=hint)
        err.instance, err.where_ = label, where  # type: ignore[attr-defined]  # for merge_repeats
        self.errors.append(self.src.locate(err, at_key=at_key))

    def _validate(self, model, data: Any, path: KeyPath, label: str | None) -> Any:
        context: dict[str, Any] = {"models": {}}
        try:
            return model.model_validate(data, context=context)
        except ValidationError as e:
            for err in errors_from_pydantic(e, data, context):
                hint = divide_hint(value_at(data, err.path), value_at(self.src.data, path + err.path), err.hint)
                self.error(err.message, path + err.path, label, hint, getattr(err, "at_key", False))
            return None

    # ------------------------------------------------------------ blocks

    def read_blocks(self, raw: Any) -> None:
        if raw is None:
            return
        if not isinstance(raw, dict):
            self.error(f"blocks must be a mapping of block name -> {{params, layers}}, got {type(raw).__name__}",
                       ("blocks",))
            return
        for name, body in raw.items():
            before = len(self.errors)
            spec = self._validate(BlockSpec, body, ("blocks", name), None)
            if spec is not None:
                self.blocks[name] = spec
                self._check_expressions(name, spec)
            if len(self.errors) > before:
                self.broken.add(name)

    def _check_expressions(self, name: str, spec: BlockSpec) -> None:
        """Syntax and names of every ${...} in a block, once, whether it is used or not."""
        known = set(spec.params) | set(RESERVED)
        for path, value in walk(spec.layers, ("blocks", name, "layers")):
            if not has_expr(value):
                continue
            try:
                for n in sorted(names(value) - known):
                    self.error(f"unknown name '{n}' in {value!r}", path,
                               hint=did_you_mean(n, known, show_all=0) or f"block '{name}' has params: "
                               f"{', '.join(spec.params) or 'none'} (and {', '.join(RESERVED)})")
            except ExprError as e:
                self.error(str(e), path)

    # ------------------------------------------------------------ layer lists

    def graph_list(self, items: list[tuple[Any, KeyPath]], ctx: Ctx, prev: Any, prev_path: KeyPath) -> tuple[list, Any]:
        """Expand a net's (or a block's) layers, wired by blob name; returns them and the last top."""
        out: list = []
        seen: dict[Any, tuple[KeyPath, bool]] = {}  # entry name -> (where, is an instance)
        for item, path in items:
            if not isinstance(item, dict):
                out.append(item)  # the schema reports it
                continue
            name = item.get("name")
            if isinstance(name, str) and name in seen and ("block" in item or seen[name][1]):
                # an instance's name prefixes all its layers' names (modules): it must be unique
                first = self.src.locate(ConfigError("", seen[name][0]))
                self.error(f"duplicate name '{name}'; a block instance's name must be unique, as it prefixes "
                           "its layers' names", path + ("name",), ctx.label, hint=f"first used at {first.where}")
                continue
            if isinstance(name, str):  # a name of another type is the schema's error, and may not hash
                seen.setdefault(name, (path, "block" in item))
            if "block" in item:
                layers, prev = self.instance(item, path, ctx, prev, prev_path)
                out += layers
                prev_path = path
                continue
            layer = dict(item)
            where = {(): (path, ctx.label)}
            if ctx.scope:
                if "name" in layer:
                    layer["name"] = ctx.name(layer["name"])
                for key in ("bottom", "top"):
                    if key in layer:
                        layer[key] = [ctx.blob(b) for b in layer[key]] if isinstance(layer[key], list) else ctx.blob(layer[key])
                if "bottom" not in layer and not out and prev is not None:  # the block's input
                    put_key(layer, "bottom", prev if isinstance(prev, list) else str(prev))
                    where[("bottom",)] = (prev_path, ctx.label)
            self.inner_lists(layer, path, ctx)
            self.origin[id(layer)] = where
            out.append(layer)
            self.count += 1
            top = layer.get("top", layer.get("name"))
            prev, prev_path = (top[0] if isinstance(top, list) and top else top), path
        return out, prev

    def inner_lists(self, layer: dict, path: KeyPath, ctx: Ctx) -> None:
        """A container layer's inner lists (Residual's body, shortcut): instances expand in
        place, named <instance>_<layer> as inner layers cannot nest; share names are scoped."""
        if ctx.share and "param" in layer:
            scope_shares(layer["param"], ctx.share)
        for key, value in list(layer.items()):
            if not is_layer_list(value):
                continue
            sub = Ctx(scope="", sep="_", share=ctx.share, label=ctx.label, stack=ctx.stack, in_block=ctx.in_block)
            layer[key] = self.seq_list([(x, path + (key, i)) for i, x in enumerate(value)], sub,
                                       f"{layer.get('name')}.{key}")

    def seq_list(self, items: list[tuple[Any, KeyPath]], ctx: Ctx, where: str) -> list:
        out: list = []
        for item, path in items:
            if not isinstance(item, dict):
                out.append(item)  # the schema reports it
                continue
            if not self.keep(item, path, ctx):
                continue
            if "block" in item:
                out += self.instance(item, path, ctx, None, path, where=where)[0]
                continue
            layer = dict(item)
            if "name" in layer:
                layer["name"] = ctx.name(layer["name"])
            self.inner_lists(layer, path, ctx)
            self.origin[id(layer)] = {(): (path, ctx.label)}
            out.append(layer)
            self.count += 1
        return out

    def keep(self, item: dict, path: KeyPath, ctx: Ctx) -> bool:
        """Read and drop an `if:` key (inside blocks only; elsewhere the schema refuses it)."""
        if not ctx.in_block or "if" not in item:
            return True
        cond = item.pop("if")
        if not isinstance(cond, bool):
            self.error(f"'if' must be true or false, got {cond!r}", path + ("if",), ctx.label,
                       hint="e.g. if: ${project} with a boolean param")
            return False
        return cond

    # ------------------------------------------------------------ instances

    def instance(self, item: dict, path: KeyPath, ctx: Ctx, prev: Any, prev_path: KeyPath,
                 where: str | None = None) -> tuple[list, Any]:
        before = len(self.errors)
        use = self._validate(BlockUse, item, path, ctx.label)
        if use is None or use.block in self.broken:
            return [], prev
        block = self.blocks.get(use.block)
        if block is None:
            self.error(f"unknown block '{use.block}'", path + ("block",), ctx.label,
                       hint=did_you_mean(use.block, self.blocks) if self.blocks else "the file has no `blocks:`")
            return [], prev
        if use.block in ctx.stack or len(ctx.stack) >= MAX_DEPTH:
            chain = " -> ".join((*ctx.stack, use.block))
            self.error(f"block '{use.block}' instantiates itself ({chain})", path + ("block",), ctx.label,
                       hint="a block may use other blocks, but not itself")
            return [], prev
        for key in ("args", "first"):
            for k in getattr(use, key):
                if k not in block.params:
                    self.error(f"block '{use.block}' has no parameter '{k}'", path + (key, k), ctx.label,
                               hint=did_you_mean(k, block.params) or "it takes no parameters", at_key=True)
        n = use.repeat or 1
        for p, default in block.params.items():
            if default is None and p not in use.args and not (n == 1 and p in use.first):
                self.error(f"block '{use.block}' needs the argument '{p}'", path + ("args",) if use.args else path,
                           ctx.label, hint=f"add args: {{{p}: ...}}")
        if len(self.errors) > before:
            return [], prev
        if ctx.sep == "_" and (use.bottom or use.top):
            self.error("inside a container layer, a block instance is wired in sequence; remove bottom/top",
                       path + ("bottom" if use.bottom else "top",), ctx.label)
            return [], prev
        if ctx.sep == "_" and (use.include or use.exclude):
            self.error("inside a container layer, every layer runs in every phase; remove include/exclude",
                       path + ("include" if use.include else "exclude",), ctx.label)
            return [], prev
        name = ctx.name(use.name)
        if use.bottom:
            prev = [ctx.blob(b) for b in use.bottom] if len(use.bottom) > 1 else ctx.blob(use.bottom[0])
            prev_path = path + ("bottom",)
        else:
            prev_path = path
        output = ctx.blob(use.top) if use.top else name
        out: list = []
        for r in range(1, n + 1):
            if self.count + (n - r + 1) * len(block.layers) > MAX_LAYERS:  # nested blocks grow it further
                self.error(f"the templates expand to more than {MAX_LAYERS:,} layers", path + ("repeat",)
                           if use.repeat else path, ctx.label, hint="is a repeat far too large?")
                return [], prev
            scope = name if use.repeat is None else f"{name}{ctx.sep}block{r}"
            label = f"{where}.{scope}" if where else scope
            env = {**block.params, **use.args, **(use.first if r == 1 else {}), "index": r, "repeat": n}
            if ctx.sep == ".":  # in a container's inner list there are no blob names
                env["bottom"] = [_Outer(b) for b in prev] if isinstance(prev, list) else _Outer(prev or "")
            given = {k: ("blocks", use.block, "params", k) for k in block.params}
            given |= {k: self._given(path + ("args", k), ctx.label) for k in use.args}
            given |= {k: self._given(path + ("first", k), ctx.label) for k in use.first} if r == 1 else {}
            self.envs[label] = {k: (v, given.get(k)) for k, v in env.items() if k != "bottom"}
            sub = Ctx(scope=scope, sep=ctx.sep, share=label, label=label, stack=(*ctx.stack, use.block), in_block=True)
            items = []
            for i, raw in enumerate(block.layers):
                tpath = ("blocks", use.block, "layers", i)
                try:
                    layer = _substitute(raw, env, tpath)
                except _SubError as e:
                    self.error(str(e.err), e.path, label)
                    continue
                if not isinstance(layer, dict) or self.keep(layer, tpath, sub):
                    items.append((layer, tpath))
            if len(self.errors) > before:
                return [], prev
            if ctx.sep == "_":
                layers = self.seq_list(items, sub, where or "")
            else:
                sub.local = {t for x, _ in items for t in tops(x)}
                layers, _ = self.graph_list(items, sub, prev, prev_path)
                if not layers:
                    if len(self.errors) == before:  # else an inner error (a cycle) emptied it: said already
                        self.error(f"block '{use.block}' leaves no layers here (every `if:` is false)", path, ctx.label)
                    return [], prev
                last = layers[-1]
                prev = output if r == n else scope
                at = (path + ("top",) if use.top else path + ("name",), ctx.label)
                if isinstance(last, dict):
                    blob = in_place_blob(layers)
                    if blob is not None:  # rename the blob, so the output exists when that layer is left out
                        for layer in layers:
                            if rename_blob(layer, blob, prev):
                                self.origin[id(layer)][("top",)] = at
                    else:
                        top = last.get("top")
                        put_key(last, "top", [prev, *top[1:]] if isinstance(top, list) and len(top) > 1 else prev)
                        self.origin[id(last)][("top",)] = at
                prev_path = path
            out += layers
        if use.include or use.exclude:  # the instance's rules, on each of its layers
            out = [x for x in out if not isinstance(x, dict) or add_rules(x, use.include, use.exclude)]
            for x in out:
                if isinstance(x, dict):
                    self.origin.setdefault(id(x), {}).update({(k,): (path + (k,), ctx.label) for k in ("include", "exclude")
                                               if getattr(use, k)})
        return out, prev

    def _given(self, path: KeyPath, outer: str | None) -> KeyPath:
        """Where an argument's value was written: for ``width: ${width}`` in a block that
        passes its own param on, where the outer instance's ``width`` was written."""
        m = _PASS.fullmatch(str(value_at(self.src.data, path)))
        at = self.envs.get(outer or "", {}).get(m[1], (None, None))[1] if m else None
        return at if at is not None else path


_PASS = re.compile(r"\$\{\s*([A-Za-z_]\w*)\s*\}")


class _SubError(Exception):
    def __init__(self, err: ExprError, path: KeyPath):
        self.err, self.path = err, path


def _substitute(value: Any, env: dict[str, Any], path: KeyPath) -> Any:
    """A deep copy of a template value with every ``${...}`` evaluated."""
    if isinstance(value, dict):
        return {k: _substitute(v, env, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, path + (i,)) for i, v in enumerate(value)]
    if has_expr(value):
        try:
            return copy.deepcopy(substitute(value, env))
        except ExprError as e:
            raise _SubError(e, path) from None
    return value
