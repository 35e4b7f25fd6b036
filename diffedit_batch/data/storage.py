"""One way to reach local disk, S3 and GCS: a URI becomes a pyarrow filesystem and a path.

URIs are ``/local/path``, ``relative/path``, ``file:///abs/path``, ``s3://bucket/key`` or
``gs://bucket/key``; ``http(s)://`` can be enabled for reading only. Credentials come from the
environment the way each cloud's SDK expects (``AWS_ACCESS_KEY_ID``..., ``GOOGLE_APPLICATION_CREDENTIALS``)
and never appear in errors or logs.
"""

from __future__ import annotations

import datetime as dt
import base64
import hashlib
import http.client
import math
import os
import posixpath
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from diffedit_batch.redaction import redact_text, redact_uri

__all__ = [
    "StorageError",
    "StorageOptions",
    "bounded",
    "delete",
    "delete_folder",
    "exists",
    "file_type",
    "join",
    "list_file_infos",
    "list_files",
    "output_key",
    "parent_uri",
    "read_bytes",
    "redact_text",
    "redact_uri",
    "resolve",
    "resolve_relative",
    "write_bytes_atomic",
]

_MiB = 1024 * 1024
# Bounds of the retry and timeout options: the backoff doubles per retry, so 16 retries already wait hours.
_MAX_RETRIES = 16
_MAX_SECONDS = 86_400.0
_OBJECT_STORES = ("s3", "gs")
_HTTP = ("http", "https")
_T = TypeVar("_T")


class StorageError(Exception):
    """A URI could not be resolved, read or written. The message names the URI, never credentials."""


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


@dataclass(frozen=True)
class StorageOptions:
    """Where inputs and outputs may live, and how storage is reached and retried.

    This is also the job config's `storage` section: each field's help is its documentation there. Plain values
    only, so it pickles to Ray workers. Credentials are never options: they come from the environment as each
    store's SDK expects.
    """

    s3_endpoint_url: str | None = field(
        default=None,
        metadata={
            "help": "S3 endpoint URL (http:// or https://) for S3-compatible stores such as MinIO; null = "
            "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL from the environment, else AWS itself."
        },
    )
    s3_region: str | None = field(
        default=None, metadata={"help": "S3 region; null = from the environment (AWS_DEFAULT_REGION, config files)."}
    )
    allowed_schemes: tuple[str, ...] = field(
        default=("file", "s3", "gs"),
        metadata={
            "help": "URI schemes that manifests and outputs may use; file covers local paths. http and https are "
            "off by default: enabling them lets a manifest make the workers fetch URLs (read only)."
        },
    )
    write_retries: int = field(
        default=4,
        metadata={"help": "Retries of a failed output write, and of an input read that failed transiently (a reset "
                          "connection, an HTTP 5xx or 429), after the first try; at most 16."},
    )
    retry_backoff_s: float = field(
        default=0.5, metadata={"help": "Delay before the first retry, in seconds; doubles on each further retry."}
    )
    max_read_bytes: int = field(
        default=256 * _MiB, metadata={"help": "Largest input object read, in bytes; a larger one is that row's error."}
    )
    http_timeout_s: float = field(default=30.0, metadata={"help": "Socket timeout of an http(s) read, in seconds."})
    timeout_s: float = field(
        default=120.0,
        metadata={
            "help": "Longest any one storage operation on S3 or GCS (a read, a write attempt, a listing, a delete) may "
            "take, in seconds; then it fails: a row's read or write becomes its storage error, the job's own files "
            "end the run with a message. Guards against stores that never answer (e.g. gs:// with no credentials)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("s3_endpoint_url", "s3_region"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"StorageOptions.{name} must be a non-empty string or null, got {value!r}")
        if self.s3_endpoint_url is not None and not self.s3_endpoint_url.startswith(("http://", "https://")):
            raise ValueError(
                f"StorageOptions.s3_endpoint_url must start with http:// or https://, got {self.s3_endpoint_url!r}"
            )
        schemes = self.allowed_schemes
        if isinstance(schemes, str) or not isinstance(schemes, (list, tuple)):
            raise ValueError(f"StorageOptions.allowed_schemes must be a list, got {schemes!r}")
        if not schemes:
            raise ValueError("StorageOptions.allowed_schemes must not be empty")
        # Schemes are case-insensitive (RFC 3986): stored lower-case, and as a tuple so the options stay hashable.
        schemes = tuple(scheme.lower() if isinstance(scheme, str) else scheme for scheme in schemes)
        for scheme in schemes:
            if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
                raise ValueError(f"StorageOptions.allowed_schemes must hold URI schemes such as s3, got {scheme!r}")
        object.__setattr__(self, "allowed_schemes", schemes)
        for name, low, high in (("write_retries", 0, _MAX_RETRIES), ("max_read_bytes", 1, 2**62)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"StorageOptions.{name} must be an integer, got {value!r}")
            if value < low:
                raise ValueError(f"StorageOptions.{name} must be >= {low}, got {value!r}")
            if value > high:
                raise ValueError(f"StorageOptions.{name} must be <= {high}, got {value!r}")
        for name, positive in (("retry_backoff_s", False), ("http_timeout_s", True), ("timeout_s", True)):
            value = getattr(self, name)
            # Finite and at most a day: an infinite timeout is no bound at all, and socket and thread waits
            # overflow on huge ones.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"StorageOptions.{name} must be a finite number, got {value!r}")
            if value < 0 or (positive and value == 0) or value > _MAX_SECONDS:
                raise ValueError(f"StorageOptions.{name} must be in {'(' if positive else '['}0, {_MAX_SECONDS:g}] "
                                 f"seconds, got {value!r}")


# --- URIs -------------------------------------------------------------------------------------


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


def _split_scheme(uri: str) -> tuple[str, str]:
    """``s3://b/k`` -> ("s3", "b/k"); ``/x`` or ``x`` -> ("file", "/x" or "x")."""
    if not isinstance(uri, str) or not uri:
        raise StorageError(f"not a URI: {uri!r}")
    match = _URI.match(uri)
    if match is None:
        return "file", uri
    return match.group(1).lower(), match.group(2)


def join(prefix: str, *parts: str) -> str:
    """Join a URI prefix and relative parts with ``/``: ``join("s3://b/out", "images", "a.png")``.

    Leading and trailing slashes of ``parts`` are dropped, so a part cannot re-root the URI.
    """
    pieces = [p.strip("/") for p in parts if p.strip("/")]
    if not pieces:
        return prefix
    if prefix.endswith("://"):
        return prefix + "/".join(pieces)
    return prefix.rstrip("/") + "/" + "/".join(pieces)


def parent_uri(uri: str) -> str:
    """The folder holding ``uri``, in the same style: ``s3://b/m/x.parquet`` -> ``s3://b/m``,
    ``x.parquet`` -> ``.``, ``/x.parquet`` -> ``/``."""
    scheme, rest = _split_scheme(uri)
    stripped = rest.rstrip("/")
    parent = posixpath.dirname(stripped) or ("/" if stripped.startswith("/") else ".")
    if uri.startswith(f"{scheme}://"):
        return f"{scheme}://{parent}"
    return parent


def resolve_relative(uri: str, base_dir_uri: str) -> str:
    """``uri`` if it is absolute (has a scheme or starts with ``/``), else ``uri`` under ``base_dir_uri``.

    ``..`` is normalised away; on S3/GCS it may not climb out of the base's bucket.
    """
    scheme, rest = _split_scheme(uri)
    if scheme != "file" or rest.startswith("/"):
        return uri
    base_scheme, base_rest = _split_scheme(base_dir_uri)
    joined = posixpath.normpath(posixpath.join(base_rest, rest))
    if base_scheme in _OBJECT_STORES:
        bucket = base_rest.split("/", 1)[0]
        if joined != bucket and not joined.startswith(bucket + "/"):
            raise StorageError(f"relative URI {uri!r} climbs out of bucket {base_scheme}://{bucket}")
    if base_dir_uri.startswith(f"{base_scheme}://"):
        return f"{base_scheme}://{joined}"
    return joined


def output_key(edit_id: str) -> str:
    """A filename-safe key for ``edit_id`` that cannot escape the folder it is joined under.

    Keeps ``[A-Za-z0-9._-]`` (other characters become ``_``, leading dots are dropped), caps the
    readable part at 80 characters and appends 16 hex digits of the id's SHA-256, so distinct ids
    never share a key: ``"cat/../x"`` -> ``"cat_.._x-<hash>"``.
    """
    # surrogatepass: a lone surrogate (possible in ids decoded from bad bytes) must hash, not crash.
    digest = hashlib.sha256(str(edit_id).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", str(edit_id)).lstrip(".")[:80]
    return f"{readable}-{digest}" if readable else digest


# --- filesystems ------------------------------------------------------------------------------

_filesystems: dict[tuple, pafs.FileSystem] = {}
_filesystems_lock = threading.Lock()


def s3_endpoint(options: StorageOptions) -> str | None:
    """The S3 endpoint URL to use: the option, else the AWS environment variables, else None (AWS itself)."""
    return (
        options.s3_endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


def _make_filesystem(scheme: str, endpoint: str | None, region: str | None, timeout_s: float) -> pafs.FileSystem:
    if scheme == "file":
        return pafs.LocalFileSystem()
    if scheme == "s3":
        kwargs: dict = {"region": region}
        if endpoint:
            parsed = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
            kwargs["scheme"] = parsed.scheme
        # Delayed open: an object smaller than one upload part is written with a single PUT (else a multipart
        # upload of three requests); either way it appears whole or not at all.
        return pafs.S3FileSystem(allow_delayed_open=True, connect_timeout=timeout_s, request_timeout=timeout_s,
                                 **kwargs)
    if scheme == "gs":
        return pafs.GcsFileSystem(retry_time_limit=dt.timedelta(seconds=timeout_s))
    raise StorageError(f"no filesystem for scheme {scheme!r}")


def _check_scheme(scheme: str, uri: str, options: StorageOptions) -> None:
    if scheme not in options.allowed_schemes:
        allowed = ", ".join(options.allowed_schemes) or "none"
        raise StorageError(
            f"URI scheme {scheme!r} is not allowed (allowed: {allowed}) in {redact_uri(uri)}"
        )


def resolve(uri: str, options: StorageOptions | None = None) -> tuple[pafs.FileSystem, str]:
    """Turn a URI into ``(filesystem, path)`` for pyarrow: ``s3://b/k`` -> (S3FileSystem, "b/k").

    Filesystems are cached per process for each (scheme, endpoint, region). Local paths become
    absolute. Raises StorageError for a scheme that is not in ``options.allowed_schemes``, or for
    http(s), which only ``read_bytes`` serves.
    """
    options = options or StorageOptions()
    scheme, rest = _split_scheme(uri)
    _check_scheme(scheme, uri, options)
    if scheme in _HTTP:
        raise StorageError(f"{scheme} URIs can only be read, with read_bytes: {redact_uri(uri)}")
    if scheme not in ("file", *_OBJECT_STORES):
        raise StorageError(f"unsupported URI scheme {scheme!r} in {redact_uri(uri)}")
    if scheme in _OBJECT_STORES and not rest.strip("/"):
        raise StorageError(f"URI has no bucket: {redact_uri(uri)}")
    if scheme in _OBJECT_STORES and redact_uri(uri) != uri:
        raise StorageError(f"{redact_uri(uri)}: credentials inside a URI are not used (and never stored); give them "
                           "through the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GCS application "
                           "default credentials)")

    endpoint = s3_endpoint(options) if scheme == "s3" else None
    region = options.s3_region if scheme == "s3" else None
    # The pid is part of the key: AWS SDK clients must not be shared across a fork.
    key = (os.getpid(), scheme, endpoint, region, options.timeout_s)
    with _filesystems_lock:
        filesystem = _filesystems.get(key)
        if filesystem is None:
            filesystem = _filesystems[key] = _make_filesystem(scheme, endpoint, region, options.timeout_s)

    if scheme == "file":
        return filesystem, os.path.abspath(rest)
    return filesystem, rest.rstrip("/")


def _with_scheme_of(template_uri: str, path: str) -> str:
    """Rebuild a URI for ``path`` in the style of ``template_uri`` (same scheme, or a bare path)."""
    scheme, _ = _split_scheme(template_uri)
    if scheme == "file" and not template_uri.startswith("file://"):
        return path
    return f"{scheme}://{path}"


def bounded(filesystem: pafs.FileSystem, action: Callable[[], _T], what: str, options: StorageOptions) -> _T:
    """``action()``, failing with StorageError after ``options.timeout_s`` on an object store.

    pyarrow's S3 and GCS clients have their own timeouts, but not for every stall (GCS without credentials waits
    on the metadata server for minutes): the call runs in a daemon thread that is abandoned when it overruns.
    Local disk is called directly.
    """
    if isinstance(filesystem, pafs.LocalFileSystem):
        return action()
    outcome: dict = {}
    done = threading.Event()

    def call() -> None:
        try:
            outcome["value"] = action()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=call, name="storage-call", daemon=True).start()
    if not done.wait(options.timeout_s):
        raise StorageError(f"{what} timed out after {options.timeout_s:g} s (storage.timeout_s)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- reading ----------------------------------------------------------------------------------


def _http_request(uri: str) -> urllib.request.Request:
    """A GET for `uri`; user info in it (`https://user:password@host/...`) becomes a Basic Authorization header,
    as curl and requests do (urllib would take it for a port and fail with the password in its message)."""
    headers = {"User-Agent": "diffedit-batch"}
    parts = urlsplit(uri)
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        uri = urlunsplit(parts._replace(netloc=f"{netloc}:{parts.port}" if parts.port else netloc))
    return urllib.request.Request(uri, headers=headers)


class _TransientRead(StorageError):
    """A read that failed in a way a moment's wait may cure (a reset connection, a 503): `read_bytes` retries it."""


# S3 errors that pyarrow raises as plain OSError but that no wait cures (its AWS error names).
_PERMANENT_S3_ERRORS = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "NO_SUCH_BUCKET")
# HTTP answers that say "later": timeouts of the request, throttling, and the server's own failures.
_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})


def _read_http(uri: str, options: StorageOptions) -> bytes:
    try:
        request = _http_request(uri)
        with urllib.request.urlopen(request, timeout=options.http_timeout_s) as response:
            data = response.read(options.max_read_bytes + 1)
    except urllib.error.HTTPError as exc:
        error = _TransientRead if exc.code in _TRANSIENT_HTTP else StorageError
        raise error(f"cannot read {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc
    except (TimeoutError, ValueError, http.client.InvalidURL) as exc:  # waited http_timeout_s already; a bad URL
        raise StorageError(f"cannot read {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc
    except (OSError, http.client.HTTPException) as exc:  # a refused or reset connection, a cut-off response
        raise _TransientRead(f"cannot read {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc
    if len(data) > options.max_read_bytes:
        raise StorageError(
            f"{redact_uri(uri)} is over the {options.max_read_bytes} byte read limit (max_read_bytes)"
        )
    return data


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    """The whole content of the object at ``uri``.

    A transient failure (a reset connection, an HTTP 5xx or 429, a store's I/O error) is retried as writes are:
    ``options.write_retries`` times, after ``options.retry_backoff_s`` doubling. A missing object, a refused
    permission and a timeout (it already waited ``timeout_s``) are not. Raises StorageError if it is missing,
    unreadable, or larger than ``options.max_read_bytes`` (checked from its size before anything is downloaded).
    """
    options = options or StorageOptions()
    attempts = options.write_retries + 1
    for attempt in range(attempts):
        try:
            return _read_once(uri, options)
        except _TransientRead as exc:
            if attempt + 1 == attempts:
                raise StorageError(f"{exc} (after {attempts} attempts)") from exc.__cause__
            _backoff_sleep(options.retry_backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def _read_once(uri: str, options: StorageOptions) -> bytes:
    scheme, _ = _split_scheme(uri)
    if scheme in _HTTP:
        _check_scheme(scheme, uri, options)
        return _read_http(uri, options)
    filesystem, path = resolve(uri, options)

    def read() -> bytes:
        with filesystem.open_input_file(path) as stream:
            size = stream.size()
            if size > options.max_read_bytes:
                raise StorageError(
                    f"{redact_uri(uri)} is {size} bytes, over the {options.max_read_bytes} byte "
                    "read limit (max_read_bytes)"
                )
            return stream.read()

    try:
        return bounded(filesystem, read, f"reading {redact_uri(uri)}", options)
    except FileNotFoundError as exc:
        raise StorageError(f"cannot read {redact_uri(uri)}: not found") from exc
    except (OSError, pa.ArrowException) as exc:
        permanent = isinstance(exc, _NOT_RETRIED) or any(code in str(exc) for code in _PERMANENT_S3_ERRORS)
        error = StorageError if permanent else _TransientRead
        raise error(f"cannot read {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    """Whether a file (or, on object stores, any object under the prefix) exists at ``uri``."""
    options = options or StorageOptions()
    filesystem, path = resolve(uri, options)
    try:
        info = bounded(filesystem, lambda: filesystem.get_file_info(path), f"checking {redact_uri(uri)}", options)
        return info.type != pafs.FileType.NotFound
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot check {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc


def file_type(uri: str, options: StorageOptions | None = None) -> pafs.FileType:
    """What is at ``uri``: File, Directory or NotFound (on object stores, Directory for a prefix with objects)."""
    options = options or StorageOptions()
    filesystem, path = resolve(uri, options)
    try:
        return bounded(filesystem, lambda: filesystem.get_file_info(path).type, f"checking {redact_uri(uri)}",
                       options)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot check {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc


def delete(uri: str, options: StorageOptions | None = None) -> None:
    """Delete the file at ``uri``; a missing file is not an error."""
    options = options or StorageOptions()
    filesystem, path = resolve(uri, options)
    try:
        bounded(filesystem, lambda: filesystem.delete_file(path), f"deleting {redact_uri(uri)}", options)
    except FileNotFoundError:
        pass
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot delete {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc


def delete_folder(uri: str, options: StorageOptions | None = None) -> None:
    """Delete the folder at ``uri`` and everything under it (on object stores: every object under the prefix);
    a missing folder is not an error."""
    options = options or StorageOptions()
    filesystem, path = resolve(uri, options)
    try:
        bounded(filesystem, lambda: filesystem.delete_dir(path), f"deleting {redact_uri(uri)}", options)
    except FileNotFoundError:
        pass
    except (OSError, pa.ArrowException) as exc:
        if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return
        raise StorageError(f"cannot delete {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class FileEntry:
    """A listed file: its URI (in the style of the listed prefix) and its size in bytes."""

    uri: str
    size: int


def list_file_infos(
    uri_prefix: str, suffix: str | None = None, options: StorageOptions | None = None
) -> list[FileEntry]:
    """Every file under the folder ``uri_prefix`` (recursively) with its size, sorted by URI.

    ``suffix`` keeps names ending in it (``".parquet"``). A missing folder gives ``[]``. URIs come back in the
    style of ``uri_prefix`` (``s3://...`` stays ``s3://...``, a bare path stays bare). On object stores this is
    one listing request per 1,000 objects.
    """
    options = options or StorageOptions()
    filesystem, path = resolve(uri_prefix, options)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    try:
        infos = bounded(filesystem, lambda: filesystem.get_file_info(selector), f"listing {redact_uri(uri_prefix)}",
                         options)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot list {redact_uri(uri_prefix)}: {type(exc).__name__}: {exc}") from exc
    files = sorted(
        (info.path, info.size)
        for info in infos
        if info.type == pafs.FileType.File and (suffix is None or info.path.endswith(suffix))
    )
    return [FileEntry(_with_scheme_of(uri_prefix, p), size) for p, size in files]


def list_files(
    uri_prefix: str, suffix: str | None = None, options: StorageOptions | None = None
) -> list[str]:
    """URIs of every file under the folder ``uri_prefix`` (recursively), sorted (see ``list_file_infos``)."""
    return [entry.uri for entry in list_file_infos(uri_prefix, suffix, options)]


# --- writing ----------------------------------------------------------------------------------

# Permanent failures: retrying them only wastes the backoff.
_NOT_RETRIED = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# A seam for tests that check the backoff schedule without sleeping.
_backoff_sleep = time.sleep


def _retrying(action: Callable[[], _T], what: str, options: StorageOptions) -> _T:
    """Run ``action``; retry transient OSError/ArrowException with exponential backoff."""
    attempts = options.write_retries + 1
    for attempt in range(attempts):
        try:
            return action()
        except _NOT_RETRIED as exc:
            raise StorageError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
        except (OSError, pa.ArrowException) as exc:
            if attempt + 1 == attempts:
                raise StorageError(
                    f"{what} failed after {attempts} attempts: {type(exc).__name__}: {exc}"
                ) from exc
            _backoff_sleep(options.retry_backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which races with other threads' file creation.
_FILE_MODE = 0o666 & ~_read_umask()


def _write_local(path: str, data: bytes) -> None:
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    # The temp file lives in the same folder so os.replace is a rename, atomic on POSIX.
    fd, temp_path = tempfile.mkstemp(prefix=f".{name[:100]}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp creates 0600; outputs get the mode a plain open() would give them (0666 less the umask).
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise


def _write_object(filesystem: pafs.FileSystem, path: str, data: bytes) -> None:
    # One write of the whole payload, then close: S3 and GCS publish the object only when the
    # upload completes on close, so a failed attempt leaves no object under the final name.
    try:
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)
    except BaseException:
        _discard_partial(filesystem, path, len(data))
        raise


def _discard_partial(filesystem: pafs.FileSystem, path: str, expected_size: int) -> None:
    """Best effort: pyarrow closes an abandoned stream, which may publish a short object."""
    try:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.File and info.size != expected_size:
            filesystem.delete_file(path)
    except (OSError, pa.ArrowException):
        pass


def write_bytes_atomic(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write ``data`` to ``uri`` so the final name holds either the old content or all of ``data``.

    Local: a temp file in the same folder, fsync, ``os.replace``. S3/GCS: a single upload that
    publishes on completion. Transient failures are retried ``options.write_retries`` times with
    exponential backoff; then StorageError.
    """
    options = options or StorageOptions()
    filesystem, path = resolve(uri, options)
    payload = bytes(data) if not isinstance(data, bytes) else data
    if isinstance(filesystem, pafs.LocalFileSystem):
        _retrying(lambda: _write_local(path, payload), f"writing {redact_uri(uri)}", options)
    else:
        what = f"writing {redact_uri(uri)}"
        _retrying(lambda: bounded(filesystem, lambda: _write_object(filesystem, path, payload), what, options), what,
                  options)
