"""CIFAR-10 and CIFAR-100 from their binary distribution (the python pickles are refused).

CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar.html): ``data_batch_1.bin`` ..
``data_batch_5.bin`` and ``test_batch.bin``, records of 1 label byte and 3,072
pixel bytes (R, G, B planes of 32x32). CIFAR-100: ``train.bin`` / ``test.bin``,
records of a coarse and a fine label byte, then the pixels. ``path`` is the
extracted directory, the directory holding it, or the ``*-binary.tar.gz``
archive itself (read in place, nothing extracted).
"""

from __future__ import annotations

import functools
import tarfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from netcfg.data.spec import DataSourceSpec
from netcfg.data.registry import register_source
from netcfg.data.split import Arrays
from netcfg.errors import ConfigError

__all__ = ["Cifar100Spec", "parse_cifar"]

PIXELS = 3 * 32 * 32
_LAYOUT = {  # source -> (extracted directory, archive, train files, test files, label bytes, classes)
    "cifar10": ("cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1, 10),
    "cifar100": ("cifar-100-binary", "cifar-100-binary.tar.gz", ["train.bin"], ["test.bin"], 2, 100),
}
_PICKLED = ("cifar-10-batches-py", "cifar-100-python", "cifar-10-python.tar.gz", "cifar-100-python.tar.gz",
            "data_batch_1", "batches.meta", "meta")


class Cifar100Spec(DataSourceSpec):
    """CIFAR-100: which of its two label sets becomes ``label``."""

    label: Literal["fine", "coarse"] = Field("fine", description="fine: the 100 classes; coarse: the 20 superclasses")


@register_source("cifar10", needs_path=True)
def load_cifar10(spec: DataSourceSpec, path: Path, base_dir: Path | None = None) -> Arrays:
    """CIFAR-10, binary version: 50,000 train and 10,000 test 32x32 colour images, 10 classes."""
    return _load("cifar10", spec, path, "label")


@register_source("cifar100", needs_path=True, spec=Cifar100Spec)
def load_cifar100(spec: Cifar100Spec, path: Path, base_dir: Path | None = None) -> Arrays:
    """CIFAR-100, binary version: 100 fine classes in 20 coarse ones (``label: fine|coarse``)."""
    return _load("cifar100", spec, path, spec.label)


def _load(kind: str, spec: DataSourceSpec, path: Path, label: str) -> Arrays:
    folder, archive, train, test, _, _ = _LAYOUT[kind]
    names = train if spec.split == "train" else test
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        archive_path = path
    elif path.is_dir():
        directory = next((d for d in (path, path / folder) if all((d / n).is_file() for n in names)), None)
        archive_path = path / archive if directory is None and (path / archive).is_file() else None
        if directory is None and archive_path is None:
            raise _missing(kind, path, names)
    else:
        raise ConfigError(f"'{path}' does not exist" if not path.exists() else f"'{path}' is not a directory or archive",
                          ("path",), hint=f"give the directory holding {folder}/, or {archive}")
    stamps = []
    if archive_path is not None:
        stat = archive_path.stat()
        stamps.append((str(archive_path.resolve()), stat.st_size, stat.st_mtime_ns))
    else:
        for n in names:
            stat = (directory / n).stat()
            stamps.append((str((directory / n).resolve()), stat.st_size, stat.st_mtime_ns))
    images, labels = _read(kind, tuple(names), tuple(stamps), archive_path is not None)
    meta = "batches.meta.txt" if kind == "cifar10" else f"{label}_label_names.txt"
    classes = _class_names(archive_path, directory if archive_path is None else None, meta)
    return Arrays({"data": images, "label": labels[label]}, {"label": classes} if classes else {})


def _missing(kind: str, path: Path, names: list[str]) -> ConfigError:
    folder, archive = _LAYOUT[kind][:2]
    present = sorted(p.name for p in path.iterdir())
    pickled = [p for p in present if p in _PICKLED] + [p.name for p in path.glob("*/") if p.name in _PICKLED]
    if pickled or (path / "data_batch_1").is_file():
        return ConfigError(f"'{path}' holds the python (pickle) version of {kind.upper()} ({pickled[0] if pickled else 'data_batch_1'}); "
                           "netcfg never unpickles downloaded files", ("path",),
                           hint=f"download the binary version, {archive}, from https://www.cs.toronto.edu/~kriz/cifar.html")
    shown = ", ".join(present[:12]) or "nothing"
    return ConfigError(f"no {kind.upper()} binary files in '{path}'", ("path",),
                       hint=f"expected {names[0]} there or in {folder}/, or {archive}; the directory holds: {shown}")


@functools.lru_cache(maxsize=4)
def _read(kind: str, names: tuple[str, ...], stamps: tuple, from_archive: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Decoded images and labels of one split (cached per process by file, size and mtime)."""
    raws = []
    if from_archive:
        try:
            with tarfile.open(stamps[0][0]) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                for n in names:
                    if n not in members:
                        raise ConfigError(f"archive '{stamps[0][0]}' has no {n}", ("path",),
                                          hint=f"is it {_LAYOUT[kind][1]}?")
                    raws.append((f"{stamps[0][0]}:{n}", tar.extractfile(members[n]).read()))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise ConfigError(f"cannot read archive '{stamps[0][0]}': {e}", ("path",),
                              hint="the download may be incomplete; download it again") from None
    else:
        for (file, _, _) in stamps:
            raws.append((file, Path(file).read_bytes()))
    parts = [parse_cifar(raw, _LAYOUT[kind][4], name, _LAYOUT[kind][5]) for name, raw in raws]
    images = np.concatenate([p[0] for p in parts])
    labels = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    return images, labels


def parse_cifar(raw: bytes, label_bytes: int, name: str, classes: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Records of ``label_bytes`` labels + 3,072 pixels -> (N, 3, 32, 32) uint8 and int64 labels."""
    record = label_bytes + PIXELS
    if not raw or len(raw) % record:
        raise ConfigError(f"'{name}' is not a CIFAR binary file: {len(raw)} bytes is not a whole number of "
                          f"{record}-byte records", ("path",), hint="the file may be truncated; download it again")
    table = np.frombuffer(raw, np.uint8).reshape(-1, record)
    images = table[:, label_bytes:].reshape(-1, 3, 32, 32).copy()  # (N, C, H, W): the files store planes
    labels = table[:, :label_bytes].astype(np.int64)
    names = ["label"] if label_bytes == 1 else ["coarse", "fine"]
    limits = [classes] if label_bytes == 1 else [20, 100]
    for i, (n, limit) in enumerate(zip(names, limits)):
        bad = np.flatnonzero(labels[:, i] >= limit)
        if len(bad):
            raise ConfigError(f"'{name}' is not a CIFAR binary file: record {bad[0]} has {n} label "
                              f"{labels[bad[0], i]} (classes are 0..{limit - 1})", ("path",),
                              hint="is this the CIFAR-10 file read as CIFAR-100, or the other way round?")
    out = {n: labels[:, i].copy() for i, n in enumerate(names)}
    return images, out


def _class_names(archive: Path | None, directory: Path | None, meta: str) -> list[str]:
    """Class names from the distribution's .txt file, if present."""
    try:
        if archive is not None:
            with tarfile.open(archive) as tar:
                member = next((m for m in tar.getmembers() if Path(m.name).name == meta), None)
                text = tar.extractfile(member).read().decode() if member is not None else ""
        else:
            file = directory / meta
            text = file.read_text() if file.is_file() else ""
    except (OSError, UnicodeDecodeError, tarfile.TarError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]
