"""Where an export is written: the output path's checks, and a temporary file beside it that
becomes the output only when the export succeeds, leaving nothing behind when it does not."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from netcfg.errors import ConfigError

__all__ = ["Output", "out_path"]


def out_path(out, weights: Path, suffix: str, net) -> Path:
    """``-o`` or the weights' name with ``suffix``; refused when it is an input or a directory.
    Its folder is not made here: only a written file makes it (``Output.open``)."""
    path = Path(out) if out is not None else weights.with_name(weights.name.removesuffix(weights.suffix) + suffix)
    sources = {weights.resolve()} | ({Path(net).resolve()} if isinstance(net, (str, Path)) else set())
    if path.resolve() in sources:
        raise ConfigError(f"the output {path} is an input of the export; it would be overwritten", file="-o",
                          hint="choose another -o")
    if path.is_dir():
        raise ConfigError(f"the output {path} is a directory", file="-o", hint="give a file name")
    return path


class Output:
    """The temporary file an export writes (its suffix tells readers the format), and the
    folders made for it; ``discard`` removes both, ``commit`` renames the file into place."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
        self.made: list[Path] = []  # the folders made for the output, deepest last
        self.opened = False  # the temporary file was made: there is something to remove

    def open(self) -> None:
        """Make the missing folders and an empty temporary file: a place that cannot be written
        is said now, not blamed on a layer after the work."""
        missing = [p for p in reversed(self.path.parents) if not p.exists()]
        try:
            for folder in missing:
                folder.mkdir()
                self.made.append(folder)
            open(self.tmp, "wb").close()
            self.opened = True
        except OSError as e:
            self.discard()
            raise _unwritable(self.path, e) from None

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        # only a file open() made: on a read-only file system, unlinking one never made is not
        # "no such file" but "Read-only file system", which hid the error open() was reporting
        if self.opened:
            with contextlib.suppress(FileNotFoundError):  # a writer already moved it
                self.tmp.unlink()
            self.opened = False
        for folder in reversed(self.made):
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile: it stays
                break
        self.made.clear()


def _unwritable(path: Path, e: OSError) -> ConfigError:
    # mkdir says "File exists" of a file where a folder should be; writing there would say this
    why = os.strerror(errno.ENOTDIR) if isinstance(e, FileExistsError) else e.strerror or str(e)
    return ConfigError(f"cannot write {path}: {why}", file="-o", hint="choose a file in a folder you can write")
