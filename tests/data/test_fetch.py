"""``netcfg data fetch`` against a real HTTP server on 127.0.0.1: checks, resume, dropped connections, errors."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import socket
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from netcfg.data import fetch as fetch_module
from netcfg.data.fetch import (
    DATASETS,
    DataSet,
    DownloadError,
    RemoteFile,
    fetch,
    sha256_of,
)
from netcfg.data.spec import source_spec
from netcfg.data.split import load_source
from tests.cli import run_cli
from tests.data.test_cifar import write_cifar10

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                                  reason="needs Debian's dataset-fashion-mnist")


class _Handler(BaseHTTPRequestHandler):
    """GET of ``/<prefix>/<name>``, with Range support unless the server says not, and scripted drops."""

    server: _Server

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        prefix, _, name = self.path.rpartition("/")
        body = srv.files.get(name) if prefix == srv.prefix else None
        if body is None:
            self.send_error(404, "Not Found")
            return
        start, rng = 0, self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        drop = srv.drop_after.pop(name, None)  # the first request of this file only
        if drop is None:
            self.wfile.write(body[start:])
            return
        self.wfile.write(body[start:start + drop])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)  # the cable is pulled mid-file
        self.close_connection = True

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes], prefix: str, ranges: bool):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.prefix, self.ranges = files, prefix, ranges
        self.drop_after: dict[str, int] = {}
        self.log: list[tuple[str, str | None]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}{prefix}/"


@contextlib.contextmanager
def serve(files: dict[str, bytes], prefix: str = "/data", ranges: bool = True):
    server = _Server(files, prefix, ranges)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def idx_files(n: int = 200, seed: int = 0) -> dict[str, bytes]:
    """Small valid MNIST-format .gz files; random pixels, so train-images is ~157 KB (gzip cannot shrink it)."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, count in (("train", n), ("t10k", n // 4)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        out[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(struct.pack(">IIII", 0x803, count, 28, 28)
                                                              + images.tobytes(), mtime=0)
        out[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(struct.pack(">II", 0x801, count) + labels.tobytes(),
                                                              mtime=0)
    return out


def table(name: str, url: str, files: dict[str, bytes], source: str = "idx") -> DataSet:
    return DataSet(name, url, tuple(RemoteFile(n, len(b), hashlib.sha256(b).hexdigest()) for n, b in files.items()),
                   source)


class Recorder:
    def __init__(self):
        self.starts, self.bytes, self.done, self.notes = [], 0, [], []

    def start(self, file, url, done):
        self.starts.append((file.name, url, done))

    def advance(self, nbytes):
        self.bytes += nbytes

    def finish(self, file, status):
        self.done.append((file.name, status))

    def note(self, text):
        self.notes.append(text)


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch):
    monkeypatch.setattr(fetch_module, "RETRY_WAIT_S", 0.0)


def _load_snippet(stdout: str, split: str):
    spec = yaml.safe_load(stdout)["data"][split]
    return load_source(source_spec(**spec))


# ---------------------------------------------------------------- the download itself

def test_download_checks_and_renames_into_place(tmp_path):
    files = idx_files()
    with serve(files) as srv:
        rec = Recorder()
        done = fetch(table("toy", srv.url, files), tmp_path, reporter=rec)
    assert [s for _, _, s in done] == ["downloaded"] * 4
    for name, body in files.items():
        assert (tmp_path / name).read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # no .part, no lock file
    assert rec.bytes == sum(map(len, files.values()))
    assert [r for _, r in srv.log] == [None] * 4  # whole files, no Range


def test_present_files_are_skipped_and_a_wrong_one_replaced(tmp_path):
    files = idx_files()
    ds = table("toy", "http://127.0.0.1:9/", files)  # nothing listens: nothing may be requested
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    assert [s for _, _, s in fetch(ds, tmp_path)] == ["present"] * 4
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    with serve(files) as srv:
        rec = Recorder()
        done = fetch(table("toy", srv.url, files), tmp_path, reporter=rec)
    assert [s for _, _, s in done] == ["present"] * 3 + ["downloaded"]
    assert [p for p, _ in srv.log] == ["/data/t10k-labels-idx1-ubyte.gz"]
    assert "is not the canonical file" in rec.notes[0]
    assert sha256_of(tmp_path / "t10k-labels-idx1-ubyte.gz") == ds.files[3].sha256


def test_dropped_connection_keeps_the_part_and_the_rerun_resumes(tmp_path):
    files = idx_files()
    name = "train-images-idx3-ubyte.gz"
    with serve(files) as srv:
        ds = table("toy", srv.url, files)
        srv.drop_after[name] = 50_000
        with pytest.raises(DownloadError) as e:
            fetch(ds, tmp_path, retries=0)
        assert e.value.exit_code == 1
        message = str(e.value)
        assert f"{srv.url}{name}" in message and "50,000 of" in message and "run the same command again" in message
        part = tmp_path / (name + ".part")
        assert part.read_bytes() == files[name][:50_000] and not (tmp_path / name).exists()
        done = fetch(ds, tmp_path, retries=0)
    assert done[0][2] == "resumed" and (tmp_path / name).read_bytes() == files[name]
    assert srv.log[-4] == (f"/data/{name}", "bytes=50000-")  # only the rest was asked for
    assert not part.exists()


def test_a_drop_is_resumed_within_the_same_run(tmp_path):
    files = idx_files()
    name = "train-images-idx3-ubyte.gz"
    with serve(files) as srv:
        srv.drop_after[name] = 70_000
        rec = Recorder()
        done = fetch(table("toy", srv.url, files), tmp_path, reporter=rec, retries=2)
    assert done[0][2] == "resumed" and (tmp_path / name).read_bytes() == files[name]
    assert "70,000 of" in rec.notes[0] and "retry 1 of 2" in rec.notes[0]
    assert [s[2] for s in rec.starts[:2]] == [0, 70_000]


def test_a_corrupted_file_is_refused_and_nothing_is_left(tmp_path):
    files = idx_files()
    ds = table("toy", "", files)
    bad = dict(files)
    name = "train-labels-idx1-ubyte.gz"
    bad[name] = files[name][:-9] + bytes([files[name][-9] ^ 0xFF]) + files[name][-8:]  # same size, one byte off
    with serve(bad) as srv, pytest.raises(DownloadError) as e:
        fetch(ds, tmp_path, base_url=srv.url)
    message = str(e.value)
    assert f"expected {ds.files[1].sha256}, got {hashlib.sha256(bad[name]).hexdigest()}" in message
    assert "deleted" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-images-idx3-ubyte.gz"]  # the file before it only


def test_a_server_without_range_support_restarts_from_zero(tmp_path):
    files = idx_files()
    name = "train-images-idx3-ubyte.gz"
    (tmp_path / (name + ".part")).write_bytes(files[name][:30_000])
    with serve(files, ranges=False) as srv:
        rec = Recorder()
        done = fetch(table("toy", srv.url, files), tmp_path, reporter=rec)
    assert srv.log[0] == (f"/data/{name}", "bytes=30000-")
    assert "does not resume" in rec.notes[0] and rec.starts[0][2] == 0
    assert done[0][2] == "downloaded" and (tmp_path / name).read_bytes() == files[name]


def test_404_and_an_unreachable_server_name_the_url(tmp_path):
    files = idx_files()
    with serve({}) as srv, pytest.raises(DownloadError) as e:
        fetch(table("toy", srv.url, files), tmp_path)
    assert f"{srv.url}train-images-idx3-ubyte.gz: HTTP 404" in str(e.value) and "--mirror" in str(e.value)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as e:
        fetch(table("toy", f"http://127.0.0.1:{port}/", files), tmp_path, retries=0)
    assert f"http://127.0.0.1:{port}/train-images-idx3-ubyte.gz: cannot connect" in str(e.value)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- the command

def test_cli_fetches_mnist_and_prints_a_solver_snippet_that_loads(tmp_path, monkeypatch):
    files = idx_files()
    root = tmp_path / "odd: dir, with spaces"  # the snippet must quote it
    with serve(files) as srv:
        monkeypatch.setitem(DATASETS, "mnist", table("mnist", srv.url, files))
        result = run_cli("data", "fetch", "MNIST", "--root", str(root))
        assert result.exit_code == 0, result.stderr
        assert f"fetching {srv.url}train-images-idx3-ubyte.gz" in result.stderr
        assert "4 downloaded" in result.stderr
        train = _load_snippet(result.stdout, "train")
        assert len(train["label"]) == 200 and tuple(train["data"].shape) == (200, 1, 28, 28)
        assert len(_load_snippet(result.stdout, "test")["label"]) == 50
        again = run_cli("data", "fetch", "mnist", "--root", str(root))
    assert again.exit_code == 0 and "all already present" in again.stderr and again.stdout == result.stdout
    assert len(srv.log) == 4


def test_cli_cifar10_snippet_reads_the_archive_in_place(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    files = {archive.name: archive.read_bytes()}
    with serve(files) as srv:
        monkeypatch.setitem(DATASETS, "cifar10", table("cifar10", srv.url, files, "cifar10"))
        monkeypatch.setenv("NETCFG_DATA", str(tmp_path / "cache"))  # the default root
        result = run_cli("data", "fetch", "cifar10")
    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(result.stdout)["data"]["train"]["path"] == str(tmp_path / "cache" / "cifar10" / archive.name)
    train = _load_snippet(result.stdout, "train")
    assert tuple(train["data"].shape) == (30, 3, 32, 32) and train.classes["label"][0] == "airplane"


def test_cli_mirror_replaces_the_base_url(tmp_path, monkeypatch):
    files = idx_files()
    monkeypatch.setitem(DATASETS, "mnist", table("mnist", "http://127.0.0.1:9/gone/", files))
    with serve(files, prefix="/mirror/mnist") as srv:
        result = run_cli("data", "fetch", "mnist", "--root", str(tmp_path / "a"), "--mirror", srv.url.rstrip("/"))
    assert result.exit_code == 0, result.stderr
    assert [p for p, _ in srv.log] == [f"/mirror/mnist/{n}" for n in files]
    (tmp_path / "dir").mkdir()  # a directory works as a mirror too
    for name, body in files.items():
        (tmp_path / "dir" / name).write_bytes(body)
    result = run_cli("data", "fetch", "mnist", "--root", str(tmp_path / "b"), "--mirror", str(tmp_path / "dir"))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "b" / "train-images-idx3-ubyte.gz").read_bytes() == files["train-images-idx3-ubyte.gz"]


def test_cli_errors_and_exit_codes(tmp_path, monkeypatch):
    # these began with a bare 'error:', naming neither the argument nor the option, as other commands do
    result = run_cli("data", "fetch", "fashion_mnsit")
    assert (result.exit_code, result.stderr) == (2, "netcfg data fetch: error: unknown data set 'fashion_mnsit' (did "
                                                    "you mean 'fashion-mnist'?; valid: cifar10, fashion-mnist, mnist)\n")
    result = run_cli("data", "fetch", "mnist", "--mirror", "ftp://example.org/mnist")
    assert (result.exit_code, result.stderr) == (2, "--mirror: error: 'ftp://example.org/mnist' is neither an http://, "
                                                    "https:// or file:// URL nor a directory (give the base URL the "
                                                    "files are under, e.g. https://example.org/mnist/, or a directory "
                                                    "holding them)\n")
    for mirror, words in (("http://[::1", "is not a well-formed URL (Invalid IPv6 URL)"), ("http://", "names no host"),
                          ("http://host:99999/x", "is not a well-formed URL")):
        result = run_cli("data", "fetch", "mnist", "--root", str(tmp_path / "m"), "--mirror", mirror)
        assert result.exit_code == 2 and result.stderr.startswith(f"--mirror: error: '{mirror}' {words}"), result.stderr
    with serve({}) as srv:
        monkeypatch.setitem(DATASETS, "mnist", table("mnist", srv.url, idx_files()))
        result = run_cli("data", "fetch", "mnist", "--root", str(tmp_path))
    assert result.exit_code == 1 and f"{srv.url}train-images-idx3-ubyte.gz: HTTP 404" in result.stderr
    assert result.stdout == ""  # no snippet for files that are not there


# ---------------------------------------------------------------- the real files

@needs_debian
def test_real_fashion_mnist_over_http_with_a_drop(tmp_path, monkeypatch):
    files = {p.name: p.read_bytes() for p in sorted(DEBIAN.glob("*.gz"))}
    with serve(files) as srv:
        # Debian's bytes differ from the canonical ones (see the next test): check against Debian's own hashes.
        monkeypatch.setitem(DATASETS, "fashion-mnist", table("fashion-mnist", srv.url, files))
        srv.drop_after["train-images-idx3-ubyte.gz"] = 10_000_000
        result = run_cli("data", "fetch", "fashion-mnist", "--root", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "10,000,000 of 26,421,856 bytes; trying again" in result.stderr
    assert ("/data/train-images-idx3-ubyte.gz", "bytes=10000000-") in srv.log
    for name, body in files.items():
        assert sha256_of(tmp_path / name) == hashlib.sha256(body).hexdigest()
    assert len(_load_snippet(result.stdout, "train")["label"]) == 60_000
    assert len(_load_snippet(result.stdout, "test")["label"]) == 10_000


@needs_debian
def test_debian_files_fail_the_canonical_check(tmp_path):
    """Debian recompressed them without the gzip file name: 24 bytes shorter, refused, nothing kept."""
    result = run_cli("data", "fetch", "fashion-mnist", "--root", str(tmp_path), "--mirror", str(DEBIAN))
    assert result.exit_code == 1
    assert "26,421,856 bytes, but the canonical train-images-idx3-ubyte.gz has 26,421,880" in result.stderr
    assert "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84" in result.stderr
    assert not any(tmp_path.iterdir())


def test_two_fetches_into_one_directory_take_turns(tmp_path):
    fcntl = pytest.importorskip("fcntl")

    files = idx_files()
    rec = Recorder()
    fd = os.open(tmp_path, os.O_RDONLY)  # another fetch holds the directory
    fcntl.flock(fd, fcntl.LOCK_EX)
    with serve(files) as srv:
        worker = threading.Thread(target=fetch, args=(table("toy", srv.url, files), tmp_path), kwargs={"reporter": rec})
        worker.start()
        worker.join(1.0)
        assert worker.is_alive() and not srv.log and "waiting for it" in rec.notes[0]
        os.close(fd)  # the other one is done
        worker.join(10)
    assert [s for _, s in rec.done] == ["downloaded"] * 4


def test_a_root_that_is_a_file_is_named_at_root(tmp_path, monkeypatch):
    # 'error: cannot create the data directory ...: File exists', naming no option, as if a folder were there
    (tmp_path / "notes").write_text("mine")
    result = run_cli("data", "fetch", "mnist", "--root", str(tmp_path / "notes"))
    assert (result.exit_code, result.stderr) == (2, f"--root: error: {tmp_path / 'notes'} is a file, not a folder "
                                                    "(give the folder the files go in (made if need be))\n")
    monkeypatch.setenv("NETCFG_DATA", str(tmp_path / "notes"))  # the default root below a file
    result = run_cli("data", "fetch", "mnist")
    assert (result.exit_code, result.stderr) == (2, f"error: cannot create the data directory '{tmp_path / 'notes/mnist'}'"
                                                    ": Not a directory (choose another with --root)\n")
