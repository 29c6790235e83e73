"""Protobuf text format (Caffe's .prototxt) -> a tree of located fields, with no protobuf code.

The grammar is the text format's: a message is a run of fields; a field is a name
followed by ``: value``, ``{ fields }`` (the colon optional; ``< fields >`` too) or
``: [v, v, ...]`` for repeated fields; ``,`` or ``;`` may end a field; ``#`` starts a
comment. Values are numbers (``-1``, ``0x1f``, ``1e-6``, ``2.5f``, ``inf``),
quoted strings with C escapes (adjacent ones concatenate) and identifiers (enums,
``true``). Every field keeps the line and column of its name and of its value, so
the converter can point at the exact place in the .prototxt; syntax errors are
ConfigErrors located the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from netcfg.errors import ConfigError
from netcfg.source import read_text

__all__ = ["Scalar", "Field", "Message", "parse_text", "parse_file"]


@dataclass
class Scalar:
    """One scalar value: ``kind`` is number, string or ident; ``value`` is int, float or str."""

    kind: str
    value: int | float | str
    text: str  # as written (for messages)
    line: int
    col: int


@dataclass
class Field:
    """``name: value`` or ``name { ... }`` with the position of the name."""

    name: str
    value: Scalar | Message
    line: int
    col: int


@dataclass
class Message:
    """The fields of one message in file order (a repeated field appears once per value)."""

    fields: list[Field] = field(default_factory=list)
    line: int = 1
    col: int = 1


_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+|\n)
  | (?P<comment>\#[^\n]*)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>["'])
  | (?P<punct>[{}<>\[\]:;,\-])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "?": "?",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_CLOSE = {"{": "}", "<": ">"}


@dataclass
class _Tok:
    kind: str  # number, ident, string, punct, eof
    text: str
    value: object
    line: int
    col: int


class _Lexer:
    def __init__(self, text: str, file: str):
        self.text, self.file = text, file

    def error(self, msg: str, line: int, col: int, hint: str | None = None) -> ConfigError:
        return ConfigError(msg, file=self.file, line=line, col=col, hint=hint)

    def tokens(self) -> list[_Tok]:
        text, pos, line, line_start = self.text, 0, 1, 0
        out: list[_Tok] = []
        while pos < len(text):
            col = pos - line_start + 1
            m = _TOKEN.match(text, pos)
            if m is None:
                raise self.error(f"unexpected character {text[pos]!r}", line, col)
            kind = m.lastgroup
            if kind == "space":
                if m.group() == "\n":
                    line, line_start = line + 1, m.end()
            elif kind == "comment":
                pass
            elif kind == "string":
                value, end = self._string(pos, line, col)
                out.append(_Tok("string", text[pos:end], value, line, col))
                pos = end
                continue
            elif kind == "number":
                word = m.group()
                if m.end() < len(text) and (text[m.end()].isalnum() or text[m.end()] == "_"):
                    bad = re.match(r"[A-Za-z0-9_.]+", text[pos:]).group()
                    raise self.error(f"'{bad}' is not a number or a name", line, col)
                out.append(_Tok("number", word, _number(word), line, col))
            else:
                out.append(_Tok(kind, m.group(), m.group(), line, col))
            pos = m.end()
        col = pos - line_start + 1
        out.append(_Tok("eof", "end of file", None, line, col))
        return out

    def _string(self, start: int, line: int, col: int) -> tuple[str, int]:
        """The decoded string whose opening quote is at ``start``, and the index after it."""
        text, quote = self.text, self.text[start]
        chars: list[str] = []
        raw = bytearray()  # octal/hex escapes are bytes; decode runs of them as UTF-8
        i = start + 1

        def flush() -> None:
            if raw:
                chars.append(raw.decode("utf-8", errors="replace"))
                raw.clear()

        while True:
            if i >= len(text) or text[i] == "\n":
                raise self.error(f"the string opened here with {quote} is never closed", line, col,
                                 hint=f"add the closing {quote} on the same line")
            c = text[i]
            if c == quote:
                flush()
                return "".join(chars), i + 1
            if c != "\\":
                flush()
                chars.append(c)
                i += 1
                continue
            esc = text[i + 1] if i + 1 < len(text) else ""
            if esc in _ESCAPES:
                flush()
                chars.append(_ESCAPES[esc])
                i += 2
            elif esc in "01234567" and esc:
                m = re.match(r"[0-7]{1,3}", text[i + 1:])
                raw.append(int(m.group(), 8) & 0xFF)
                i += 1 + len(m.group())
            elif esc in ("x", "X"):
                m = re.match(r"[0-9a-fA-F]{1,2}", text[i + 2:])
                if m is None:
                    raise self.error("\\x must be followed by hex digits", line, i - self._line_start(i) + 1)
                raw.append(int(m.group(), 16))
                i += 2 + len(m.group())
            elif esc in ("u", "U"):
                n = 4 if esc == "u" else 8
                digits = text[i + 2:i + 2 + n]
                if not re.fullmatch(rf"[0-9a-fA-F]{{{n}}}", digits):
                    raise self.error(f"\\{esc} must be followed by {n} hex digits", line, i - self._line_start(i) + 1)
                flush()
                chars.append(chr(int(digits, 16)))
                i += 2 + n
            else:
                raise self.error(f"unknown escape '\\{esc}' in a string", line, i - self._line_start(i) + 1,
                                 hint="valid: \\n \\t \\r \\\\ \\' \\\" \\NNN (octal) \\xHH \\uHHHH")

    def _line_start(self, i: int) -> int:
        return self.text.rfind("\n", 0, i) + 1


def _number(word: str) -> int | float:
    if word[:2] in ("0x", "0X"):
        return int(word, 16)
    if re.fullmatch(r"0[0-7]+", word):
        return int(word, 8)
    if re.fullmatch(r"[0-9]+", word):
        return int(word)
    return float(word.rstrip("fF"))


def _describe(tok: _Tok) -> str:
    return "the end of the file" if tok.kind == "eof" else f"'{tok.text}'"


class _Parser:
    def __init__(self, tokens: list[_Tok], lexer: _Lexer):
        self.toks, self.i, self.lexer = tokens, 0, lexer

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def is_punct(self, text: str) -> bool:
        tok = self.peek()
        return tok.kind == "punct" and tok.text == text

    def error(self, msg: str, tok: _Tok, hint: str | None = None) -> ConfigError:
        return self.lexer.error(msg, tok.line, tok.col, hint)

    def message(self, opener: _Tok | None) -> Message:
        """Fields up to the closer of ``opener`` (or the end of the file at the top level)."""
        msg = Message(line=opener.line if opener else 1, col=opener.col if opener else 1)
        close = _CLOSE[opener.text] if opener else None
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                if close:
                    raise self.error(f"the '{opener.text}' at line {opener.line}, column {opener.col} is never closed",
                                     tok, hint=f"add the missing '{close}'")
                return msg
            if close and tok.kind == "punct" and tok.text == close:
                self.take()
                return msg
            if tok.kind == "punct" and tok.text == "[":
                raise self.error("extensions ([name]) are not supported in Caffe files", tok)
            if tok.kind != "ident":
                expected = f"a field name or '{close}'" if close else "a field name"
                hint = "a '}' closes nothing here" if tok.text in ("}", ">") and not close else None
                raise self.error(f"expected {expected}, found {_describe(tok)}", tok, hint=hint)
            self.field(msg)

    def field(self, msg: Message) -> None:
        name = self.take()
        colon = self.is_punct(":")
        if colon:
            self.take()
        tok = self.peek()
        if tok.kind == "punct" and tok.text in _CLOSE:
            self.take()
            msg.fields.append(Field(name.text, self.message(tok), name.line, name.col))
        elif colon and tok.kind == "punct" and tok.text == "[":
            self.take()
            if self.is_punct("]"):
                self.take()
            else:
                while True:
                    item = self.peek()
                    if item.kind == "punct" and item.text in _CLOSE:
                        self.take()
                        value: Scalar | Message = self.message(item)
                    else:
                        value = self.scalar(name)
                    msg.fields.append(Field(name.text, value, name.line, name.col))
                    sep = self.take()
                    if sep.kind == "punct" and sep.text == "]":
                        break
                    if not (sep.kind == "punct" and sep.text == ","):
                        raise self.error(f"expected ',' or ']' in the list of '{name.text}', found {_describe(sep)}", sep)
        elif colon:
            msg.fields.append(Field(name.text, self.scalar(name), name.line, name.col))
        else:
            raise self.error(f"expected ':' or '{{' after the field name '{name.text}', found {_describe(tok)}", tok,
                             hint=f"write '{name.text}: value' or '{name.text} {{ ... }}'")
        if self.peek().kind == "punct" and self.peek().text in (",", ";"):
            self.take()

    def scalar(self, name: _Tok) -> Scalar:
        tok = self.take()
        if tok.kind == "punct" and tok.text == "-":
            num = self.take()
            if num.kind == "number":
                return Scalar("number", -num.value, "-" + num.text, tok.line, tok.col)
            if num.kind == "ident" and num.text.lower() in ("inf", "infinity", "nan"):
                return Scalar("number", -float(num.text.lower()[:3]), "-" + num.text, tok.line, tok.col)
            raise self.error(f"expected a number after '-', found {_describe(num)}", num)
        if tok.kind == "number":
            return Scalar("number", tok.value, tok.text, tok.line, tok.col)
        if tok.kind == "ident":
            return Scalar("ident", tok.text, tok.text, tok.line, tok.col)
        if tok.kind == "string":
            parts, texts = [tok.value], [tok.text]
            while self.peek().kind == "string":  # "a" "b" is "ab", as in C
                nxt = self.take()
                parts.append(nxt.value)
                texts.append(nxt.text)
            return Scalar("string", "".join(parts), " ".join(texts), tok.line, tok.col)
        raise self.error(f"expected a value for '{name.text}', found {_describe(tok)}", tok)


def parse_text(text: str, file: str = "<string>") -> Message:
    """Parse protobuf text into the top-level Message; syntax errors are located ConfigErrors."""
    text = text.removeprefix("\ufeff")
    lexer = _Lexer(text, file)
    return _Parser(lexer.tokens(), lexer).message(None)


def parse_file(path: str | Path) -> Message:
    """Read and parse a .prototxt file."""
    path = Path(path)
    hint = "a .caffemodel is binary: pass it with --weights" if path.suffix == ".caffemodel" else None
    return parse_text(read_text(path, ".prototxt", hint), str(path))
