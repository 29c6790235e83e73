"""Downloading MNIST, Fashion-MNIST and CIFAR-10: SHA-256 checked, resumed, renamed into place.

A file is written to ``<name>.part`` and renamed to ``<name>`` only once its size and
SHA-256 match the published ones (TensorFlow Datasets' ``url_checksums`` files), so a
data directory never holds a half-written or wrong file under a real name. A dropped
connection keeps the ``.part``; the next attempt asks for the rest with an HTTP ``Range``
request, or starts from zero when the server ignores it. Standard library only; urllib
is imported when a download starts, since every ``netcfg.data`` module is imported
whenever data sources are discovered.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from netcfg.errors import ConfigError, NetcfgError, did_you_mean

__all__ = ["DATASETS", "DataSet", "DownloadError", "RemoteFile", "Reporter", "data_set", "default_root", "fetch",
           "mirror_url", "sha256_of", "solver_snippet"]

CHUNK = 1 << 20
TIMEOUT_S = 30.0     # per socket operation; a stalled server counts as a dropped connection
RETRY_WAIT_S = 1.0   # first pause before resuming after a drop; grows linearly with the attempt


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set, as published: its name, size in bytes and SHA-256."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DataSet:
    """A downloadable data set: base URL (files keep their names under it) and the source that reads it."""

    name: str
    url: str
    files: tuple[RemoteFile, ...]
    source: str


def _idx(sizes_and_hashes: dict[str, tuple[int, str]]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, s, h) for n, (s, h) in sizes_and_hashes.items())


DATASETS: dict[str, DataSet] = {
    "mnist": DataSet("mnist", "https://storage.googleapis.com/cvdf-datasets/mnist/", _idx({
        "train-images-idx3-ubyte.gz": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    }), "idx"),
    # The S3 website endpoint of the Fashion-MNIST README serves plain HTTP only; the hash guards it.
    "fashion-mnist": DataSet("fashion-mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", _idx({
        "train-images-idx3-ubyte.gz": (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    }), "idx"),
    # The binary version: the cifar10 source reads this archive in place (no pickles, nothing extracted).
    "cifar10": DataSet("cifar10", "https://www.cs.toronto.edu/~kriz/", (
        RemoteFile("cifar-10-binary.tar.gz", 170052171, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    ), "cifar10"),
}


class DownloadError(NetcfgError):
    """A download that failed for a reason outside the user's input (network, server, checksum): exit 1."""

    exit_code = 1


class Reporter:
    """What a download tells its user (this one: nothing); the CLI draws a bar on a terminal, lines otherwise."""

    def start(self, file: RemoteFile, url: str, done: int) -> None:
        """A transfer begins, ``done`` bytes already in the .part."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more arrived."""

    def finish(self, file: RemoteFile, status: str) -> None:
        """The file is in place: ``present``, ``downloaded`` or ``resumed``."""

    def note(self, text: str) -> None:
        """A retry, a restart from zero, a wait for another fetch."""


class _Dropped(Exception):
    """The transfer stopped early; the .part holds what came."""


def data_set(name: str) -> DataSet:
    """The data set called ``name`` (``fashion_mnist`` and ``FASHION-MNIST`` work too)."""
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ConfigError(f"unknown data set '{name}'", file="netcfg data fetch", hint=did_you_mean(key, DATASETS))
    return DATASETS[key]


def default_root(name: str) -> Path:
    """``$NETCFG_DATA/<name>``, else ``$XDG_CACHE_HOME/netcfg/data/<name>`` (``~/.cache`` by default)."""
    if os.environ.get("NETCFG_DATA"):
        return Path(os.environ["NETCFG_DATA"]).expanduser() / name
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "netcfg" / "data" / name


_MIRROR = "give the base URL the files are under, e.g. https://example.org/mnist/, or a directory holding them"


def mirror_url(mirror: str) -> str:
    """A base URL from ``--mirror``: http(s):// or file:// URL, or a local directory; ends with '/'."""
    if mirror.startswith(("http://", "https://", "file://")):
        try:
            parts = urllib.parse.urlsplit(mirror)
            parts.port  # noqa: B018  (a bad port raises here, not at the first download)
        except ValueError as e:
            raise ConfigError(f"'{mirror}' is not a well-formed URL ({e})", file="--mirror", hint=_MIRROR) from None
        if parts.scheme != "file" and not parts.hostname:
            raise ConfigError(f"'{mirror}' names no host", file="--mirror", hint=_MIRROR)
        return mirror if mirror.endswith("/") else mirror + "/"
    path = Path(mirror).expanduser()
    if path.is_dir():
        return path.resolve().as_uri() + "/"
    raise ConfigError(f"'{mirror}' is neither an http://, https:// or file:// URL nor a directory", file="--mirror",
                      hint=_MIRROR)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def fetch(ds: DataSet, root: Path, base_url: str | None = None, reporter: Reporter | None = None,
          retries: int = 3) -> list[tuple[RemoteFile, Path, str]]:
    """Every file of ``ds`` into ``root``: (file, path, status) with status present, downloaded or resumed.

    ``retries`` is how many times a dropped connection is resumed within this call."""
    reporter = reporter or Reporter()
    base = base_url or ds.url
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # mkdir's "File exists" is of a file in the folder's place
        why = "a file is in its place" if isinstance(e, FileExistsError) else e.strerror or e
        raise NetcfgError(f"cannot create the data directory '{root}': {why} (choose another with --root)") from None
    out = []
    with _lock(root, reporter):
        for file in ds.files:
            dest = root / file.name
            if _is_good(dest, file):
                status = "present"
            else:
                if dest.exists():
                    reporter.note(f"{dest} is not the canonical file (size or SHA-256 differ): fetching it again")
                status = _download(base + file.name, dest, file, reporter, retries)
            reporter.finish(file, status)
            out.append((file, dest, status))
    return out


def _is_good(dest: Path, file: RemoteFile) -> bool:
    """A file already in place with the right size and hash (a wrong one is replaced once the new one checks)."""
    return dest.is_file() and dest.stat().st_size == file.size and sha256_of(dest) == file.sha256


def _download(url: str, dest: Path, file: RemoteFile, reporter: Reporter, retries: int) -> str:
    part = dest.with_name(dest.name + ".part")
    resumed = False
    for attempt in range(retries + 1):
        try:
            resumed |= _transfer(url, part, file, reporter) > 0
            break
        except _Dropped as e:
            have = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                if not have:
                    raise DownloadError(f"{url}: {e} (check the network, or --mirror URL to fetch the same "
                                        "file names from another server)") from None
                raise DownloadError(
                    f"{url}: {e} after {have:,} of {file.size:,} bytes; the partial download is kept in {part}: "
                    "run the same command again to resume (or --mirror URL to fetch from another server)") from None
            reporter.note(f"{file.name}: {e} at {have:,} of {file.size:,} bytes; trying again "
                          f"(retry {attempt + 1} of {retries})")
            time.sleep(RETRY_WAIT_S * (attempt + 1))
    got = sha256_of(part)
    if got != file.sha256:
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 mismatch for {file.name}: expected {file.sha256}, got {got}; "
                            "the download was deleted (a damaged transfer or a different file: run again, "
                            "or --mirror URL to fetch from another server)")
    os.replace(part, dest)  # atomic: readers see the old file or the checked new one, never a mix
    return "resumed" if resumed else "downloaded"


def _transfer(url: str, part: Path, file: RemoteFile, reporter: Reporter) -> int:
    """Bring ``part`` to ``file.size`` bytes: continue it with a Range request, or restart from zero.

    Returns how many bytes of an earlier attempt were kept."""
    import http.client
    import urllib.error
    import urllib.request

    from netcfg import __version__

    have = part.stat().st_size if part.is_file() else 0
    if have > file.size:  # not a prefix of this file
        part.unlink()
        have = 0
    if have == file.size:  # finished before an interrupted check or rename
        return have
    headers = {"User-Agent": f"netcfg/{__version__} (urllib)", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the server's file is no longer than our prefix: start afresh
            part.unlink()
            raise _Dropped("the server refused to resume (HTTP 416)") from None
        if e.code >= 500:
            raise _Dropped(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason} (--mirror URL fetches the same file names "
                            "from another server)") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, FileNotFoundError):  # a file:// mirror without the file: nothing to retry
            raise DownloadError(f"{url}: no such file (--mirror names the directory holding {file.name})") from None
        raise _Dropped(f"cannot connect ({reason})") from None
    with response:
        status = getattr(response, "status", None) or 200  # file:// answers without a status
        if have and status == 206 and not _starts_at(response.headers.get("Content-Range"), have):
            part.unlink()
            raise _Dropped("the server resumed at the wrong offset")
        if have and status != 206:
            reporter.note(f"{file.name}: the server does not resume downloads; starting again from 0")
            have = 0
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and have + int(length) != file.size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: {have + int(length):,} bytes, but the canonical {file.name} has "
                                f"{file.size:,} (sha256 {file.sha256}): a different file, nothing was kept "
                                "(--mirror URL to fetch from another server)")
        kept = have
        reporter.start(file, url, have)
        with _open_part(part, have) as out:
            while have <= file.size:  # one byte past the size is enough to know it is wrong
                try:
                    block = response.read(min(CHUNK, file.size + 1 - have))
                except (http.client.HTTPException, OSError) as e:
                    raise _Dropped(f"connection lost ({type(e).__name__}: {e})") from None
                if not block:
                    break
                try:
                    out.write(block)
                except OSError as e:
                    raise DownloadError(f"cannot write {part}: {e.strerror or e} "
                                        "(free some space, or choose another --root)") from None
                have += len(block)
                reporter.advance(len(block))
    if have < file.size:
        raise _Dropped("the connection closed early")
    return kept


def _starts_at(content_range: str | None, offset: int) -> bool:
    """Whether ``Content-Range: bytes START-END/TOTAL`` starts at ``offset``."""
    try:
        return int(content_range.split()[1].split("-")[0]) == offset
    except (AttributeError, IndexError, ValueError):
        return False


@contextlib.contextmanager
def _open_part(part: Path, have: int) -> Iterator:
    try:
        out = open(part, "ab" if have else "wb")  # noqa: SIM115 (closed by the with below)
    except OSError as e:
        raise NetcfgError(f"cannot write {part}: {e.strerror or e} (choose another --root)") from None
    with out:
        yield out
        out.flush()
        os.fsync(out.fileno())  # on disk before the rename makes it the real file


@contextlib.contextmanager
def _lock(root: Path, reporter: Reporter) -> Iterator[None]:
    """One fetch per directory at a time, so two never append to the same .part.

    The kernel's lock on the directory itself (flock): no lock file is left behind, and it
    dies with its process. Without flock (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            reporter.note(f"another netcfg data fetch is writing to {root}; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def solver_snippet(ds: DataSet, root: Path) -> str:
    """The ``data:`` section of a solver file that reads the fetched files."""
    path = root if ds.source == "idx" else root / ds.files[0].name
    where = f"source: {ds.source}, path: {_yaml_str(str(path))}"
    # CIFAR's usual augmentation (random 4-pixel shifts, flips); MNIST-style data trains without.
    augment = ", pad: 4, crop_size: 32, mirror: true" if ds.source.startswith("cifar") else ""
    return "\n".join([
        "# paste into a solver file:",
        "data:",
        f"  train: {{{where}, split: train,",
        f"          batch_size: 64, scale: 0.00390625{augment}}}",
        f"  test:  {{{where}, split: test,",
        "          batch_size: 100, scale: 0.00390625}",
    ])


def _yaml_str(text: str) -> str:
    """``text`` as a YAML flow scalar: plain when safe, else double-quoted (JSON is valid YAML)."""
    import json

    plain = text and all(c.isalnum() or c in "/._-~+" for c in text)
    return text if plain else json.dumps(text)
