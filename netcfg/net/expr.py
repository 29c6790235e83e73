"""The ``${...}`` mini-language of block templates: safe arithmetic on block parameters.

An expression is parsed with ``ast`` and only these forms are allowed: numbers,
quoted strings, true/false/null, parameter names, ``+ - * / // %``, comparisons,
``and or not``, ``a if cond else b``, indexing a list (``widths[index - 1]``) and
the functions ``min max int round``. Nothing is ever passed to ``eval``: the tree
is walked here, so a template cannot reach Python.

A string that is one whole ``${...}`` takes the expression's value with its type
(``"${width * 4}"`` is the number 256); ``${...}`` inside longer text is
interpolated (``"conv${index}"``). ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import ast
import operator
from functools import lru_cache
from typing import Any

__all__ = ["ExprError", "RESERVED", "has_expr", "names", "substitute"]

# names every block may read besides its parameters
RESERVED = ("bottom", "index", "repeat")
_CONSTANTS = {"true": True, "false": False, "null": None}
_FUNCTIONS = {"min": min, "max": max, "int": int, "round": round}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_ALLOWED = "numbers, 'strings', parameter names, + - * / // %, comparisons, and/or/not, " \
           "a if cond else b, list[i], min/max/int/round"
_MAX_LEN = 10_000  # a string or list an expression may build (no memory bombs)


class ExprError(ValueError):
    """A bad ``${...}``: its text and what is wrong with it."""


def has_expr(text: Any) -> bool:
    return isinstance(text, str) and "${" in text


def names(text: str) -> set[str]:
    """The parameter names ``text``'s expressions read; ExprError on a bad expression."""
    out: set[str] = set()
    for part in _parse(text):
        if not isinstance(part, str):
            nodes = list(ast.walk(part[1]))
            called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}  # min, max, int, round
            out |= {n.id for n in nodes if isinstance(n, ast.Name) and id(n) not in called} - set(_CONSTANTS)
    return out


def substitute(text: str, env: dict[str, Any]) -> Any:
    """``text`` with every ``${...}`` evaluated in ``env``; a lone one keeps its type."""
    parts = _parse(text)
    if len(parts) == 1 and not isinstance(parts[0], str):
        return _value(parts[0], env)
    return "".join(p if isinstance(p, str) else _show(_value(p, env)) for p in parts)


def _value(part: tuple[str, ast.AST], env: dict[str, Any]) -> Any:
    source, tree = part
    try:
        return _eval(tree, env)
    except ExprError as e:
        raise ExprError(f"in '${{{source}}}': {e}") from None
    except (ArithmeticError, TypeError, ValueError, IndexError) as e:
        raise ExprError(f"cannot evaluate '${{{source}}}': {e}") from None


def _show(v: Any) -> str:
    """A value interpolated into text, spelt as YAML would (true, null)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else str(v)


@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple:
    """Split ``text`` into literal strings and (source, checked tree) pairs."""
    parts: list = []
    rest = text
    while rest:
        start = rest.find("${")
        if start < 0:
            parts.append(rest)
            break
        if start > 0 and rest[start - 1] == "$":  # $${ -> a literal ${
            parts.append(rest[:start - 1] + "${")
            rest = rest[start + 2:]
            continue
        if start:
            parts.append(rest[:start])
        end = rest.find("}", start)
        if end < 0:
            raise ExprError(f"'${{' without a closing '}}' in {text!r}")
        source = rest[start + 2:end].strip()
        if not source:
            raise ExprError(f"empty '${{}}' in {text!r}")
        try:
            tree = ast.parse(source, mode="eval").body
        except SyntaxError as e:
            raise ExprError(f"bad expression '${{{source}}}': {e.msg}") from None
        for node in ast.walk(tree):
            _check_node(node, source)
        parts.append((source, tree))
        rest = rest[end + 1:]
    merged: list = []  # adjacent literals (from $${) joined, so a lone ${...} is recognised
    for p in parts:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        else:
            merged.append(p)
    return tuple(merged)


_NODES = (ast.Constant, ast.Name, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call,
          ast.Subscript, ast.Load, ast.And, ast.Or, *_BINARY, *_COMPARE, *_UNARY)


def _check_node(node: ast.AST, source: str) -> None:
    if not isinstance(node, _NODES):
        what = type(node).__name__
        raise ExprError(f"'${{{source}}}' uses {what}, which templates do not allow (allowed: {_ALLOWED})")
    if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str, bool, type(None))):
        raise ExprError(f"'${{{source}}}' holds the constant {node.value!r}; use numbers or 'strings'")
    if isinstance(node, ast.Call):
        fn = node.func.id if isinstance(node.func, ast.Name) else None
        if fn not in _FUNCTIONS or node.keywords:
            raise ExprError(f"'${{{source}}}' calls {ast.unparse(node.func)}(); templates may call only "
                            f"{', '.join(_FUNCTIONS)} (positional arguments)")
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        raise ExprError(f"'${{{source}}}' slices a list; index one item, e.g. widths[index - 1]")


def _eval(node: ast.AST, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id not in env:
            raise ExprError(f"unknown name '{node.id}'")
        return env[node.id]
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Mult) and (isinstance(a, (str, list)) or isinstance(b, (str, list))):
            raise ExprError("'*' multiplies numbers only")
        out = _BINARY[type(node.op)](a, b)
        if isinstance(out, (str, list)) and len(out) > _MAX_LEN:
            raise ExprError(f"the result is longer than {_MAX_LEN:,}")
        return out
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.BoolOp):
        value = None
        for v in node.values:  # short-circuit, as Python does
            value = _eval(v, env)
            if bool(value) == isinstance(node.op, ast.Or):
                return value
        return value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, env)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, env) else node.orelse, env)
    if isinstance(node, ast.Call):
        args = [_eval(a, env) for a in node.args]
        if node.func.id == "round" and len(args) > 1 and isinstance(args[1], int) and abs(args[1]) > 30:
            raise ExprError(f"round(x, {args[1]}): round to at most 30 digits")  # 10 ** huge never ends
        try:
            return _FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError, OverflowError) as e:
            raise ExprError(f"{ast.unparse(node)}: {e}") from None
    if isinstance(node, ast.Subscript):
        seq, i = _eval(node.value, env), _eval(node.slice, env)
        if not isinstance(seq, (list, str)) or not isinstance(i, int) or isinstance(i, bool):
            raise ExprError(f"only a list can be indexed, by an integer; got {type(seq).__name__}[{i!r}]")
        return seq[i]
    raise ExprError(f"unsupported expression {ast.unparse(node)!r}")  # _check_node refused it already
