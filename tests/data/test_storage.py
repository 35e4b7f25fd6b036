"""storage: URI handling, output keys, reads, atomic writes and their retries (local and injected)."""

from __future__ import annotations

import base64
import functools
import http.server
import os
import pickle
import posixpath
import re
import threading
import time
from pathlib import Path
from typing import NamedTuple

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from diffedit_batch.data import storage
from diffedit_batch.data.storage import (
    StorageError,
    StorageOptions,
    delete,
    exists,
    join,
    list_files,
    output_key,
    parent_uri,
    read_bytes,
    redact_uri,
    resolve,
    resolve_relative,
    write_bytes_atomic,
)

FAST = StorageOptions(retry_backoff_s=0.0)


# --- URIs -------------------------------------------------------------------------------------


def test_resolve_local_paths(tmp_path):
    filesystem, path = resolve(str(tmp_path / "a.png"))
    assert isinstance(filesystem, pafs.LocalFileSystem) and path == str(tmp_path / "a.png")
    assert resolve(f"file://{tmp_path}/a.png")[1] == str(tmp_path / "a.png")
    assert resolve("rel/a.png")[1] == os.path.abspath("rel/a.png")


def test_resolve_s3_path_and_cache():
    options = StorageOptions(s3_endpoint_url="http://127.0.0.1:9", s3_region="us-east-1")
    filesystem, path = resolve("s3://bucket/some/key.png", options)
    assert filesystem.type_name == "s3" and path == "bucket/some/key.png"
    assert resolve("s3://other/x", options)[0] is filesystem  # one filesystem per endpoint
    elsewhere = StorageOptions(s3_endpoint_url="http://127.0.0.1:10", s3_region="us-east-1")
    assert resolve("s3://bucket/x", elsewhere)[0] is not filesystem


@pytest.mark.parametrize(
    "uri, options, scheme",
    [
        ("s3://bucket/key", StorageOptions(allowed_schemes=("file",)), "s3"),
        ("https://example.com/a.png", StorageOptions(), "https"),
        ("ftp://example.com/a.png", StorageOptions(allowed_schemes=("file", "ftp")), "ftp"),
        ("/tmp/a.png", StorageOptions(allowed_schemes=("s3",)), "file"),
    ],
)
def test_refused_schemes_name_the_scheme(uri, options, scheme):
    with pytest.raises(StorageError, match=f"'{scheme}'"):
        read_bytes(uri, options)


def test_http_is_read_only_even_when_allowed():
    options = StorageOptions(allowed_schemes=("file", "http"))
    with pytest.raises(StorageError, match="only be read"):
        write_bytes_atomic("http://127.0.0.1:9/x", b"x", options)


def test_join():
    assert join("s3://b/out/", "images", "k.png") == "s3://b/out/images/k.png"
    assert join("/data/out", "/images/", "k.png") == "/data/out/images/k.png"  # no re-rooting
    assert join("s3://b", "") == "s3://b"


@pytest.mark.parametrize(
    "uri, base, expected",
    [
        ("img/a.png", "s3://b/manifests", "s3://b/manifests/img/a.png"),
        ("../img/a.png", "s3://b/manifests", "s3://b/img/a.png"),
        ("s3://other/a.png", "s3://b/manifests", "s3://other/a.png"),
        ("/abs/a.png", "s3://b/manifests", "/abs/a.png"),
        ("a.png", "/data/m", "/data/m/a.png"),
        ("a.png", "file:///data/m", "file:///data/m/a.png"),
        ("./x/../a.png", "gs://g/m", "gs://g/m/a.png"),
    ],
)
def test_resolve_relative(uri, base, expected):
    assert resolve_relative(uri, base) == expected


def test_resolve_relative_cannot_leave_the_bucket():
    with pytest.raises(StorageError, match="climbs out of bucket"):
        resolve_relative("../../other-bucket/a.png", "s3://b/m")


@pytest.mark.parametrize(
    "uri, expected",
    [("s3://b/m/x.parquet", "s3://b/m"), ("x.parquet", "."), ("/x.parquet", "/"), ("/d/x", "/d")],
)
def test_parent_uri(uri, expected):
    assert parent_uri(uri) == expected


def test_redact_uri_hides_userinfo_and_presigned_query():
    shown = redact_uri("https://user:hunter2@host:8443/a.png?X-Amz-Signature=SECRET")
    assert shown == "https://host:8443/a.png"


# --- output keys ------------------------------------------------------------------------------

HOSTILE_IDS = [
    "../../etc/passwd",
    "..",
    ".",
    "",
    "/abs/path",
    "a/b",
    "a_b",
    "a\\b",
    "..\\..\\windows",
    "a\x00b",
    ".hidden",
    "ñandú/日本語",
    "\ud800lone-surrogate",
    "x" * 10_000,
    "CON",
    "id#3",
]


@pytest.mark.parametrize("edit_id", HOSTILE_IDS)
def test_output_key_cannot_escape_its_folder(edit_id):
    key = output_key(edit_id)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", key)  # no '/', '\\', NUL; no leading dot
    assert not key.startswith("..") and len(key) <= 100
    prefix = "s3://bucket/out"
    target = join(prefix, "images", key + ".png")
    assert posixpath.normpath(target.removeprefix("s3://")).startswith("bucket/out/images/")
    assert output_key(edit_id) == key  # deterministic


def test_output_keys_of_distinct_ids_differ():
    keys = {output_key(i) for i in HOSTILE_IDS}
    assert len(keys) == len(HOSTILE_IDS)  # "a/b", "a_b", "a\\b" sanitise alike but hash apart
    assert output_key("photo-001").startswith("photo-001-")  # readable part kept


# --- local reads and writes -------------------------------------------------------------------


def test_read_bytes_local_and_errors(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    assert read_bytes(str(tmp_path / "a.bin")) == b"x" * 100
    with pytest.raises(StorageError, match="not found"):
        read_bytes(str(tmp_path / "missing.bin"))
    with pytest.raises(StorageError, match="100 bytes, over the 10 byte read limit"):
        read_bytes(str(tmp_path / "a.bin"), StorageOptions(max_read_bytes=10))


def test_exists_delete_list(tmp_path):
    for name in ("b.parquet", "a.parquet", "sub/c.parquet", "note.txt"):
        write_bytes_atomic(str(tmp_path / name), b"1")
    assert list_files(str(tmp_path), ".parquet") == [
        str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), str(tmp_path / "sub/c.parquet"),
    ]
    assert list_files(f"file://{tmp_path}/sub") == [f"file://{tmp_path}/sub/c.parquet"]
    assert list_files(str(tmp_path / "nowhere")) == []
    assert exists(str(tmp_path / "note.txt"))
    delete(str(tmp_path / "note.txt"))
    delete(str(tmp_path / "note.txt"))  # deleting twice is fine
    assert not exists(str(tmp_path / "note.txt"))


def test_local_atomic_write_creates_folders_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "deep" / "er" / "x.png"
    write_bytes_atomic(str(target), b"old")
    write_bytes_atomic(str(target), b"new content")
    assert target.read_bytes() == b"new content"
    assert os.listdir(target.parent) == ["x.png"]


def test_local_write_failure_keeps_old_content_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    calls = []

    def broken_fsync(fd):
        calls.append(fd)
        raise OSError(5, "disk on fire")

    monkeypatch.setattr(storage.os, "fsync", broken_fsync)
    monkeypatch.setattr(storage, "_backoff_sleep", lambda s: None)
    with pytest.raises(StorageError, match="after 3 attempts: OSError"):
        write_bytes_atomic(str(target), b"new", StorageOptions(write_retries=2))
    assert len(calls) == 3
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.png"]


# --- retries through an injected object store -------------------------------------------------


class _FlakyStore(pafs.FSSpecHandler):
    """An in-memory object store whose first ``failures`` uploads fail (as ``error``).

    ``partial=True`` makes a failing upload first write half its bytes and then close, the way an
    abandoned pyarrow stream would publish a short object.
    """

    def __init__(self, failures: int, error: type[OSError] = OSError, partial: bool = False):
        super().__init__(fsspec.filesystem("memory"))
        self.failures, self.error, self.partial, self.attempts = failures, error, partial, 0

    def open_output_stream(self, path, metadata):
        self.attempts += 1
        if self.failures == 0:
            return super().open_output_stream(path, metadata)
        self.failures -= 1
        if not self.partial:
            raise self.error("injected upload failure")
        inner = self.fs.open(path, "wb")
        error = self.error

        class HalfWriter:
            closed = False

            def write(self, data):
                inner.write(bytes(data)[: len(data) // 2])
                raise error("connection reset mid-upload")

            def close(self):
                inner.close()
                self.closed = True

            def flush(self):
                pass

        return pa.PythonFile(HalfWriter(), mode="w")


@pytest.fixture
def flaky(monkeypatch, request):
    """Route every URI to a fresh in-memory flaky store; record backoff sleeps instead of sleeping."""
    fsspec.filesystem("memory").store.clear()
    sleeps: list[float] = []
    monkeypatch.setattr(storage, "_backoff_sleep", sleeps.append)

    def install(**kwargs):
        handler = _FlakyStore(**kwargs)
        filesystem = pafs.PyFileSystem(handler)
        monkeypatch.setattr(storage, "resolve", lambda uri, options=None: (filesystem, "/bucket/obj"))
        return handler, filesystem, sleeps

    return install


def _content(filesystem) -> bytes | None:
    if filesystem.get_file_info("/bucket/obj").type == pafs.FileType.NotFound:
        return None
    with filesystem.open_input_stream("/bucket/obj") as stream:
        return stream.read()


def test_write_failing_twice_then_succeeding_succeeds(flaky):
    handler, filesystem, sleeps = flaky(failures=2)
    write_bytes_atomic("s3://bucket/obj", b"payload", StorageOptions(write_retries=4, retry_backoff_s=0.5))
    assert _content(filesystem) == b"payload"
    assert handler.attempts == 3
    assert sleeps == [0.5, 1.0]  # exponential backoff


def test_write_that_keeps_failing_raises_storage_error(flaky):
    handler, filesystem, sleeps = flaky(failures=100)
    with pytest.raises(StorageError, match=r"writing s3://bucket/obj failed after 5 attempts"):
        write_bytes_atomic("s3://bucket/obj", b"payload", StorageOptions(write_retries=4, retry_backoff_s=0.5))
    assert handler.attempts == 5 and sleeps == [0.5, 1.0, 2.0, 4.0]
    assert _content(filesystem) is None


def test_half_written_upload_leaves_no_object(flaky):
    handler, filesystem, _ = flaky(failures=100, partial=True)
    with pytest.raises(StorageError):
        write_bytes_atomic("s3://bucket/obj", b"0123456789", StorageOptions(write_retries=1))
    assert handler.attempts == 2
    assert _content(filesystem) is None


def test_half_written_upload_then_retry_publishes_the_whole_object(flaky):
    _, filesystem, _ = flaky(failures=1, partial=True)
    write_bytes_atomic("s3://bucket/obj", b"0123456789", FAST)
    assert _content(filesystem) == b"0123456789"


def test_permanent_errors_are_not_retried(flaky):
    handler, _, sleeps = flaky(failures=100, error=PermissionError)
    with pytest.raises(StorageError, match="PermissionError"):
        write_bytes_atomic("s3://bucket/obj", b"x", StorageOptions(write_retries=4))
    assert handler.attempts == 1 and sleeps == []


class _FlakyReads(pafs.FSSpecHandler):
    """An in-memory object store whose first ``failures`` reads fail (as ``error``)."""

    def __init__(self, failures: int, error: type[OSError] = OSError):
        super().__init__(fsspec.filesystem("memory"))
        self.failures, self.error, self.attempts = failures, error, 0

    def open_input_file(self, path):
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise self.error("connection reset by peer")
        return super().open_input_file(path)


@pytest.mark.parametrize("failures, error, attempts, sleeps", [
    (2, OSError, 3, [0.5, 1.0]),  # a blip: read on the third try
    (100, OSError, 5, [0.5, 1.0, 2.0, 4.0]),  # still failing after write_retries: the row's storage error
    (100, PermissionError, 1, []),  # no wait cures a refusal
])
def test_a_transient_read_failure_is_retried_with_the_write_backoff(monkeypatch, failures, error, attempts, sleeps):
    fsspec.filesystem("memory").store.clear()
    fsspec.filesystem("memory").pipe("/bucket/obj", b"picture")
    handler = _FlakyReads(failures, error)
    filesystem = pafs.PyFileSystem(handler)
    monkeypatch.setattr(storage, "resolve", lambda uri, options=None: (filesystem, "/bucket/obj"))
    slept: list[float] = []
    monkeypatch.setattr(storage, "_backoff_sleep", slept.append)
    options = StorageOptions(write_retries=4, retry_backoff_s=0.5)
    if failures < attempts:
        assert read_bytes("s3://bucket/obj", options) == b"picture"
    else:
        with pytest.raises(StorageError, match=error.__name__):
            read_bytes("s3://bucket/obj", options)
    assert (handler.attempts, slept) == (attempts, sleeps)


def test_an_http_503_is_retried_and_a_404_is_not(tmp_path, monkeypatch):
    answers = iter([503, 503, 200])
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            status = 404 if self.path == "/missing" else next(answers)
            self.send_response(status)
            self.end_headers()
            if status == 200:
                self.wfile.write(b"picture")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setattr(storage, "_backoff_sleep", lambda s: None)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        options = StorageOptions(allowed_schemes=("http",), http_timeout_s=5)
        assert read_bytes(f"{url}/p.png", options) == b"picture" and len(requests) == 3
        with pytest.raises(StorageError, match="404"):
            read_bytes(f"{url}/missing", options)
        assert len(requests) == 4
    finally:
        server.shutdown()
        server.server_close()


# --- options and http -------------------------------------------------------------------------


def test_storage_options_pickle_and_validate():
    options = StorageOptions(s3_endpoint_url="http://h:1", allowed_schemes=["FILE", "s3"])
    assert options.allowed_schemes == ("file", "s3")
    assert pickle.loads(pickle.dumps(options)) == options
    hash(options)
    with pytest.raises(ValueError):
        StorageOptions(write_retries=-1)


class HttpRoot(NamedTuple):
    folder: Path
    url: str
    authorizations: list  # each GET's Authorization header


@pytest.fixture
def http_root(tmp_path):
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            authorizations.append(self.headers.get("Authorization"))
            super().do_GET()

    authorizations: list = []

    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield HttpRoot(tmp_path, f"http://127.0.0.1:{server.server_address[1]}", authorizations)
    server.shutdown()
    server.server_close()


def test_http_reads_when_enabled(http_root):
    folder, url, _ = http_root
    (folder / "a.png").write_bytes(b"p" * 50)
    options = StorageOptions(allowed_schemes=("http",), http_timeout_s=5)
    assert read_bytes(f"{url}/a.png", options) == b"p" * 50
    with pytest.raises(StorageError, match="read limit"):
        read_bytes(f"{url}/a.png", StorageOptions(allowed_schemes=("http",), max_read_bytes=10))
    with pytest.raises(StorageError, match="404") as caught:
        read_bytes(f"{url}/missing.png?X-Amz-Signature=SECRET", options)
    assert "SECRET" not in str(caught.value)
    with pytest.raises(StorageError) as caught:
        read_bytes(f"http://user:hunter2@{url[7:]}/missing.png", options)
    assert "hunter2" not in str(caught.value) and "404" in str(caught.value)


def test_http_user_info_is_sent_as_basic_auth_never_as_part_of_the_host(http_root):
    folder, url, _ = http_root
    (folder / "a.png").write_bytes(b"p" * 5)
    options = StorageOptions(allowed_schemes=("http",), http_timeout_s=5)
    assert read_bytes(f"http://us%40er:hun:ter2@{url[7:]}/a.png", options) == b"p" * 5
    assert http_root.authorizations[-1] == "Basic " + base64.b64encode(b"us@er:hun:ter2").decode()
    # A URL the HTTP client cannot parse (http.client.InvalidURL is no OSError) is a StorageError too.
    with pytest.raises(StorageError, match="cannot read"):
        read_bytes("http://127.0.0.1:99999/a.png", options)


def test_atomic_local_writes_get_the_usual_file_mode(tmp_path):
    """mkstemp's 0600 must not leak into outputs: reports and images are read by other users and servers."""
    import os

    from diffedit_batch.data.storage import write_bytes_atomic

    target = tmp_path / "out.png"
    write_bytes_atomic(str(target), b"data")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


# --- timeouts ---------------------------------------------------------------------------------


class _HangingStore(pafs.FileSystemHandler):
    """A store that never answers (until released at the end of the test)."""

    def __init__(self, release: threading.Event):
        self.release = release

    def _hang(self, *args, **kwargs):
        self.release.wait()
        raise OSError("released")

    get_type_name = lambda self: "hanging"  # noqa: E731
    get_file_info = get_file_info_selector = open_input_stream = open_input_file = _hang
    open_output_stream = open_append_stream = delete_file = delete_dir = delete_dir_contents = _hang
    create_dir = delete_root_dir_contents = move = copy_file = normalize_path = _hang

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other


def test_a_store_that_never_answers_fails_each_operation_after_the_timeout(monkeypatch):
    release = threading.Event()
    filesystem = pafs.PyFileSystem(_HangingStore(release))
    monkeypatch.setattr(storage, "resolve", lambda uri, options=None: (filesystem, "bucket/obj"))
    options = StorageOptions(timeout_s=0.3, write_retries=3, retry_backoff_s=0.0)
    try:
        for operation in (lambda: read_bytes("s3://bucket/obj", options),
                          lambda: write_bytes_atomic("s3://bucket/obj", b"x", options),
                          lambda: list_files("s3://bucket/", None, options),
                          lambda: exists("s3://bucket/obj", options),
                          lambda: delete("s3://bucket/obj", options)):
            started = time.perf_counter()
            with pytest.raises(StorageError, match=r"timed out after 0.3 s \(storage.timeout_s\)"):
                operation()
            assert time.perf_counter() - started < 2  # a timed-out write is not retried: it would hang again
    finally:
        release.set()


def test_gcs_without_credentials_fails_within_the_timeout():
    """The issue's case: an image at gs:// on a machine with no GCS credentials hung its fetch for minutes."""
    options = StorageOptions(timeout_s=2.0)
    started = time.perf_counter()
    with pytest.raises(StorageError):
        read_bytes("gs://diffedit-batch-no-such-bucket/picture.png", options)
    assert time.perf_counter() - started < 10


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout_s"):
        StorageOptions(timeout_s=0)
