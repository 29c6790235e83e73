"""Source folder: one sub-folder of image files per class, decoded once and cached as uint8.

Layout: ``path/train/<class>/*.png`` and ``path/test/<class>/...`` (or ``val``),
or ``path/<class>/...`` cut in two by ``test_fraction`` (the last files of each
class, in name order, are the test split). Classes are the train folder's
sub-folders in sorted order; their index is the label. Hidden files and folders
(``.DS_Store``, macOS's ``._name.jpg``) are skipped; a class folder's own
sub-folders are read too (``cat/2019/1.jpg`` is a cat).

A split that fits in ``memory_limit_mb`` (default: a quarter of the machine's
memory) is decoded once (in worker processes when large) and cached as an
uncompressed .npz in ``path/.netcfg-cache/`` (or ``cache_dir``, or
``~/.cache/netcfg/`` when the data's directory is read-only); the cache holds a
fingerprint of every file's name, size and mtime, and is rebuilt when any
changes. A larger split is streamed: worker processes decode each batch while
the previous one trains. Needs Pillow (``pip install 'netcfg[images]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from netcfg.data.decode import EXTENSIONS, decode_errors, image_size, require_pillow
from netcfg.data.spec import DataSourceSpec
from netcfg.data.registry import register_source
from netcfg.data.split import Arrays
from netcfg.data.stream import StreamedImages, decode_all, default_workers
from netcfg.errors import ConfigError

__all__ = ["FolderSpec", "list_split", "cache_file"]

CACHE_VERSION = 3  # 2: 16-bit images scaled to 8 bits (1 clipped them); 3: EXIF orientation applied


class FolderSpec(DataSourceSpec):
    """folder: image size and channels, the split layout, caching and streaming."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("path", "mean_file", "cache_dir")

    image_size: list[int] | int | None = Field(None, description="resize every image to [H, W] (or S x S); default: keep the size, which all images must share")
    channels: Literal[1, 3] = Field(3, description="1: grayscale, 3: RGB (images are converted)")
    extensions: list[str] = Field(list(EXTENSIONS), description="file name endings read as images (case-insensitive)")
    test_fraction: float | None = Field(None, gt=0, lt=1, description="without train/ and test/ folders: this last fraction of each class's files is the test split")
    cache: bool = Field(True, description="keep the decoded split as a uint8 .npz for the next run")
    cache_dir: str | None = Field(None, min_length=1, description="where the cache goes; default: path/.netcfg-cache, or ~/.cache/netcfg if path is read-only")
    memory_limit_mb: float | None = Field(None, gt=0, description="stream splits whose decoded size exceeds this; default: a quarter of the machine's memory")
    workers: int | None = Field(None, ge=1, description="decoding processes; default: the CPU count, at most 8")

    @field_validator("image_size")
    @classmethod
    def _two_positive(cls, v: list[int] | int | None) -> list[int] | int | None:
        values = [v] if isinstance(v, int) else v or []
        if v is not None and (len(values) not in (1, 2) or min(values) < 1):
            raise ValueError(f"image_size must be a positive size or [H, W], got {v}")
        return v

    @property
    def size(self) -> tuple[int, int] | None:
        v = self.image_size
        if v is None:
            return None
        values = [v] if isinstance(v, int) else v
        return (values[0], values[-1])


@register_source("folder", needs_path=True, spec=FolderSpec)
def load_folder(spec: FolderSpec, path: Path, base_dir: Path | None = None) -> Arrays:
    """Image files in one sub-folder per class (Pillow); cached, or streamed when large."""
    try:
        require_pillow()
    except ImportError as e:
        raise ConfigError(str(e), ("source",)) from None
    files, labels, classes = list_split(spec, path)
    workers = spec.workers or default_workers()
    size = spec.size or _first_size(files)
    nbytes = len(files) * spec.channels * size[0] * size[1]
    if nbytes > (spec.memory_limit_mb * 2**20 if spec.memory_limit_mb else _memory() / 4):
        images = StreamedImages(files, spec.channels, size, workers, resize=spec.size is not None)
        return Arrays({"data": images, "label": labels}, {"label": classes})
    fingerprint = _fingerprint(spec, path, files, classes)
    cached = cache_file(spec, path, base_dir) if spec.cache else None
    data = _read_cache(cached, fingerprint) if cached is not None else None
    if data is None:
        data = decode_all(files, spec.channels, spec.size, workers)
        if cached is not None:
            _write_cache(cached, fingerprint, data, labels)
    return Arrays({"data": data, "label": labels}, {"label": classes})


def list_split(spec: FolderSpec, path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(image files, int64 labels, class names) of the split ``spec`` names."""
    if not path.is_dir():
        raise ConfigError(f"'{path}' is not a directory" if path.exists() else f"directory '{path}' does not exist",
                          ("path",), hint="give the directory with one sub-folder per class (or train/ and test/)")
    test_dir = next((path / n for n in ("test", "val") if (path / n).is_dir()), None)
    if (path / "train").is_dir():
        if spec.test_fraction is not None:
            raise ConfigError(f"'{path}' has train/ (and test/) folders, so test_fraction would hold out nothing",
                              ("test_fraction",), hint="remove test_fraction: the folders already split the data")
        classes = _classes(path / "train")
        if spec.split == "test" and test_dir is None:
            raise ConfigError(f"'{path}' has train/ but no test/ or val/ folder", ("path",))
        root = path / "train" if spec.split == "train" else test_dir
        files, labels = _files(spec, root, classes, strict=spec.split == "test")
    else:
        classes = _classes(path)
        files, labels = _files(spec, path, classes)
        if spec.test_fraction is not None:
            keep = _cut(labels, spec.test_fraction, spec.split)
            files, labels = [files[i] for i in keep], labels[keep]
        elif spec.split == "test":
            raise ConfigError(f"'{path}' has no test/ folder to test on", ("path",),
                              hint="add test_fraction: 0.2 to hold out the last fifth of each class, or make train/ and test/ folders")
    if not files:
        raise ConfigError(f"no image files for the {spec.split} split under '{path}'", ("path",),
                          hint=f"files ending in {', '.join(spec.extensions)} inside one sub-folder per class")
    return files, labels, classes


def _classes(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ConfigError(f"'{root}' has no class sub-folders", ("path",),
                          hint="put each class's images in a folder named after it: cat/1.png, dog/2.png")
    return classes


def _files(spec: FolderSpec, root: Path, classes: list[str], strict: bool = False) -> tuple[list[str], np.ndarray]:
    endings = tuple(e.lower() for e in spec.extensions)
    files, labels, empty = [], [], []
    if strict:
        extra = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in classes)
        if extra:
            raise ConfigError(f"class folder '{extra[0]}' of {root} is not a class of the train split", ("path",),
                              hint=f"train classes: {', '.join(classes[:20])}")
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        names = _images_below(folder, endings)
        files += [str(folder / f) for f in names]
        labels += [label] * len(names)
        empty += [] if names else [name]
    if empty and files and not strict:  # a class of no samples would still shift the labels after it
        raise ConfigError(f"class folder '{empty[0]}' of {root} holds no image files", ("path",),
                          hint=f"files ending in {', '.join(spec.extensions)}; add its images, or remove the folder "
                               f"(it would be class {classes.index(empty[0])} with no samples)")
    return files, np.array(labels, np.int64)


def _images_below(folder: Path, endings: tuple[str, ...]) -> list[str]:
    """Image files at any depth below a class folder (as torchvision's ImageFolder and Keras
    read them: cat/2019/1.jpg is a cat), as sorted relative paths. Hidden files and folders
    are not samples: macOS leaves ._name.jpg metadata next to every copied image."""
    names, seen = [], set()
    for top, dirs, found in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link back to a folder already read
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(top).relative_to(folder)
        names += [str(rel / f) for f in found if f.lower().endswith(endings) and not f.startswith(".")
                  and os.path.isfile(os.path.join(top, f))]
    return sorted(names, key=lambda n: Path(n).parts)


def _cut(labels: np.ndarray, fraction: float, split: str) -> np.ndarray:
    """Indices of the split: per class, the last ``fraction`` of its files are test."""
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = round(len(idx) * fraction)
        keep.append(idx[len(idx) - n_test:] if split == "test" else idx[: len(idx) - n_test])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def _first_size(files: list[str]) -> tuple[int, int]:
    try:
        return image_size(files[0])
    except decode_errors() as e:
        raise ConfigError(f"cannot read the image ({e})", file=files[0], hint="remove or replace the file") from None


def _memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


# ---------------------------------------------------------------- cache


def _fingerprint(spec: FolderSpec, path: Path, files: list[str], classes: list[str]) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, spec.channels, spec.size, classes]).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.relpath(f, path)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_file(spec: FolderSpec, path: Path, base_dir: Path | None = None) -> Path:
    """Where this split's decoded images are cached (one file per split and options)."""
    options = json.dumps([spec.split, spec.channels, spec.size, spec.test_fraction, sorted(spec.extensions)])
    name = f"folder-{spec.split}-{hashlib.sha256(options.encode()).hexdigest()[:12]}.npz"
    if spec.cache_dir is not None:
        root = spec.resolve(spec.cache_dir, base_dir)
        return root / hashlib.sha256(str(path).encode()).hexdigest()[:16] / name
    if os.access(path, os.W_OK):
        return path / ".netcfg-cache" / name
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return xdg / "netcfg" / "folder" / hashlib.sha256(str(path).encode()).hexdigest()[:16] / name


def _read_cache(file: Path, fingerprint: str) -> np.ndarray | None:
    """The cached images if the cache matches the files now on disk; None otherwise."""
    try:
        with np.load(file, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            return z["data"]
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing, stale or damaged: decode again


def _write_cache(file: Path, fingerprint: str, data: np.ndarray, labels: np.ndarray) -> None:
    """Written to a temporary name and renamed, so a reader never sees half a cache."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, data=data, label=labels, fingerprint=np.array(fingerprint))
        os.replace(tmp, file)
    except OSError:
        pass  # a cache that cannot be written only costs decoding time next run
