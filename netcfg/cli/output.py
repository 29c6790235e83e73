"""Writing a command's ``-o`` file (no ``register``: not a command)."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

__all__ = ["check_output", "write_output", "writing"]


def check_output(path: Path, *, option: str = "--output", inputs: tuple[Path, ...] = (), overwrite: bool = True) -> None:
    """Before any work: ``path`` is none of the command's own ``inputs``, its folder exists or can
    be made (``writing`` makes it, so a command that fails first leaves no empty folder), it can be
    written, and (``overwrite=False``: without ``--force``) it does not exist yet; an error (exit 2)
    otherwise, not a traceback at the end."""
    from netcfg.errors import ConfigError

    for source in inputs:
        if path.exists() and source.exists() and path.resolve() == source.resolve():
            raise ConfigError(f"{path} is the file being read: writing it would destroy it", file=option,
                              hint="choose another output file")
    folder = _existing_folder(path.parent)
    if not folder.is_dir() or path.is_dir() or not os.access(folder, os.W_OK) or (
            path.exists() and not os.access(path, os.W_OK)):
        # as writing would say (chmod does not mend a read-only mount)
        code = (errno.ENOTDIR if not folder.is_dir() else errno.EISDIR if path.is_dir()
                else errno.EROFS if _read_only(folder) else errno.EACCES)
        raise ConfigError(f"cannot write {path}: {os.strerror(code)}", file=option,
                          hint="choose a file in a folder you can write")
    if not overwrite and path.exists():  # as import-caffe and export: never replace a user's file unasked
        raise ConfigError(f"{path} already exists", file=option, hint="pass --force to overwrite it, or choose another -o")


def _existing_folder(folder: Path) -> Path:
    """``folder``, or its nearest ancestor that exists (a file where a folder should be, perhaps)."""
    while not (folder.exists() or folder.is_symlink()) and folder != folder.parent:
        folder = folder.parent
    return folder


def _read_only(folder: Path) -> bool:
    """``folder`` is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False


def write_output(path: Path, text: str | bytes, *, option: str = "--output", inputs: tuple[Path, ...] = (),
                 overwrite: bool = True) -> None:
    """Write ``text`` (or bytes) to ``path``, making its folder; never over one of the command's own
    ``inputs`` (nor over any file, ``overwrite=False``), and a place that cannot be written is an
    error (exit 2), not a traceback."""
    check_output(path, option=option, inputs=inputs, overwrite=overwrite)
    with writing(path, option):
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)


@contextlib.contextmanager
def writing(path: Path, option: str = "--output"):
    """Around the code that writes ``path``: its folder is made first, and taken away again if
    the writing fails; a failure of the OS (a full disk, a folder removed meanwhile) is an error
    naming ``option`` (exit 2), not a traceback."""
    from netcfg.errors import ConfigError

    top = _existing_folder(path.parent)
    made = [p for p in (path.parent, *path.parent.parents) if p != top and top in p.parents]  # deepest first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException as e:
        for folder in made:  # only the empty ones this made: a folder the writing filled stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(e, OSError):
            raise ConfigError(f"cannot write {path}: {e.strerror or e}", file=option,
                              hint="choose a file in a folder you can write") from None
        raise
