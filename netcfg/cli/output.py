"""Writing a command's ``-o`` file (no ``register``: not a command)."""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["check_output", "write_output", "writing"]


def check_output(path: Path, *, option: str = "--output", inputs: tuple[Path, ...] = (), overwrite: bool = True) -> None:
    """Before any work: ``path`` is none of the command's own ``inputs``, its folder exists
    (made if need be) and can be written, and (``overwrite=False``: without ``--force``) it does not
    exist yet; an error (exit 2) otherwise, not a traceback at the end."""
    import errno
    import os

    from netcfg.errors import ConfigError

    for source in inputs:
        if path.exists() and source.exists() and path.resolve() == source.resolve():
            raise ConfigError(f"{path} is the file being read: writing it would destroy it", file=option,
                              hint="choose another output file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # mkdir's "File exists" is of a file where a folder should be: writing says this
        why = os.strerror(errno.ENOTDIR) if isinstance(e, FileExistsError) else e.strerror
        raise ConfigError(f"cannot write {path}: {why}", file=option,
                          hint="choose a file in a folder you can write") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        what = os.strerror(errno.EISDIR if path.is_dir() else errno.EROFS if _read_only(path.parent)
                           else errno.EACCES)  # as writing it would say (chmod does not mend a read-only mount)
        raise ConfigError(f"cannot write {path}: {what}", file=option, hint="choose a file in a folder you can write")
    if not overwrite and path.exists():  # as import-caffe and export: never replace a user's file unasked
        raise ConfigError(f"{path} already exists", file=option, hint="pass --force to overwrite it, or choose another -o")


def _read_only(folder: Path) -> bool:
    """``folder`` is on a file system mounted read-only."""
    import os

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
    """Around the code that writes ``path``: a failure of the OS (a full disk, a folder
    removed meanwhile) is an error naming ``option`` (exit 2), not a traceback."""
    from netcfg.errors import ConfigError

    try:
        yield
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror}", file=option,
                          hint="choose a file in a folder you can write") from None
