"""One training process per run directory: a ``train.lock`` file, locked while its owner lives.

The lock is the kernel's (``flock``), so it dies with its process, kill -9
included: a lock file left by a dead run is *stale* and the next run simply
takes it over. The file holds the owner's pid and host, for the message that
refuses a second run. Where ``flock`` does not exist (Windows) the pid alone
decides: a lock whose process is gone is stale.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from netcfg.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["RunLock", "LOCK_NAME", "remove_stale_temporaries"]

LOCK_NAME = "train.lock"


class _Held:
    """The lock file this process holds in one directory, shared by its RunLocks."""

    def __init__(self, path: Path, handle, previous: str):
        self.path, self.handle, self.previous, self.count = path, handle, previous, 0


_HELD: dict[str, _Held] = {}  # resolved directory -> what this process holds there


class RunLock:
    """Held by the process training into ``directory``; ``release()`` (or exit) frees it.

    Another process is refused; this process may take the same directory again
    (a Solver resuming the run an earlier Solver object of the same program wrote)."""

    def __init__(self, held: _Held):
        held.count += 1
        self._held: _Held | None = held
        self.path = held.path
        self.previous = held.previous if held.count == 1 else ""  # "<pid> <host>" of a stale lock, or ""

    @classmethod
    def acquire(cls, directory: Path, where: str = "--out") -> RunLock:
        """Lock ``directory`` for this process, taking over a stale lock; a ConfigError
        (located at ``where``) names the owner when another live process holds it."""
        key = os.path.realpath(directory)
        held = _HELD.get(key)
        if held is not None and not _same_file(held):  # the directory was removed and made again
            del _HELD[key]
            held = None
        if held is None:
            path = Path(directory) / LOCK_NAME
            try:
                held = _acquire(path, where) if fcntl is not None else _acquire_by_pid(path, where)
            except OSError as e:
                raise ConfigError(f"cannot lock the run directory {directory}: {e.strerror or e}", file=where,
                                  hint="is the directory writable?") from None
            _HELD[key] = held
        return cls(held)

    def release(self) -> None:
        """Let go; the last RunLock of this process removes the file, then unlocks it
        (in that order: see ``_acquire``)."""
        held, self._held = self._held, None
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        for key, value in list(_HELD.items()):
            if value is held:
                del _HELD[key]
        if _same_file(held):  # not a newer lock file at the same path
            try:
                held.path.unlink()
            except OSError:
                pass
        held.handle.close()

    def __del__(self) -> None:
        if getattr(self, "_held", None) is not None:
            self.release()


def _acquire(path: Path, where: str) -> _Held:
    while True:
        handle = open(path, "a+")  # create if missing, keep what a stale owner wrote
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip()
            handle.close()
            raise _in_use(path.parent, owner, where) from None
        try:  # an owner that released between our open() and flock() unlinked that file
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    previous = handle.read().strip()
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {socket.gethostname()}\n")
    handle.flush()
    return _Held(path, handle, previous)


def _acquire_by_pid(path: Path, where: str) -> _Held:
    previous = ""
    if path.exists():
        previous = path.read_text(errors="replace").strip()
        pid = _pid_of(previous)
        if pid is not None and _alive(pid):
            raise _in_use(path.parent, previous, where)
        path.unlink()
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # FileExistsError: lost a race
    handle = os.fdopen(fd, "w")
    handle.write(f"{os.getpid()} {socket.gethostname()}\n")
    handle.flush()
    return _Held(path, handle, previous)


def _same_file(held: _Held) -> bool:
    try:
        return os.stat(held.path).st_ino == os.fstat(held.handle.fileno()).st_ino
    except (OSError, ValueError):  # gone, or the handle is closed
        return False


def _in_use(directory: Path, owner: str, where: str) -> ConfigError:
    pid, _, host = owner.partition(" ")
    who = f"pid {pid}" + (f" on {host}" if host else "") if pid else "another process"
    return ConfigError(f"run directory {directory} is in use by another netcfg train ({who})", file=where,
                       hint="wait for it to finish or stop it; a run that died leaves a stale lock that "
                            "--resume takes over")


def _pid_of(owner: str) -> int | None:
    head = owner.split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but is not ours to signal
        return True
    return True


_TEMPORARY = re.compile(r".+\.tmp-(\d+)")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the half-written ``*.tmp-<pid>`` files that killed processes left in ``directory``
    (call it holding the lock: no live run writes there then). Returns what was removed."""
    removed = []
    for p in Path(directory).iterdir():
        m = _TEMPORARY.fullmatch(p.name)
        if m and p.is_file() and (int(m.group(1)) == os.getpid() or not _alive(int(m.group(1)))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed
