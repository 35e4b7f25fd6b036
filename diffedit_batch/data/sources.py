"""A source picture's identity as storage gives it without reading it, and the digest of its bytes.

Records carry both (`source_identity`, `source_digest`): a re-run asks storage for the identity of each done
edit's picture again (one stat or HEAD, `source_identities`) and edits again, as `changed`, those whose picture
changed under the same URI (re-cropped, re-downloaded over the old file).

- local disk: `size:<bytes>;mtime_ns:<ns>` (a touched file with the same bytes counts as changed);
- S3: the object's ETag (`etag:<...>`), from the HEAD that opening it makes anyway;
- GCS: size and modification time, as pyarrow's `FileInfo` gives them;
- http(s): none (a server's answer says nothing reliable without a GET): such pictures are never re-checked;
- a picture embedded in its input (a Parquet row's bytes `<file>#row=<k>`, a WebDataset member
  `<shard>.tar#<member>`): the identity of the file or shard that holds it. Rewriting that file counts as changing
  each of its pictures (its done rows are edited again), as nothing short of reading them can tell which did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.fs as pafs

from .parquet_input import split_locator
from .storage import StorageError, StorageOptions, bounded, redact_uri, resolve

__all__ = ["IDENTITY_THREADS", "holder_of", "source_digest", "source_identities", "source_identity"]

# Stats (HEADs) in flight per plan task: storage latency, not CPU, is their cost. Two plan tasks run at a time on
# two cores (each takes a CPU: it is fused into the shuffle's reduce), 128 HEADs in flight.
IDENTITY_THREADS = 64
_HTTP = ("http://", "https://")


def source_digest(data: bytes) -> str:
    """32 hex digits (128 bits of blake2b) of a picture's bytes, as they were read for its edit."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def holder_of(uri: str) -> str:
    """The file whose identity stands for the picture `uri` names: the Parquet file or WebDataset shard of an
    embedded picture's locator, else `uri` itself."""
    located = split_locator(uri)
    if located is not None:
        return located[0]
    shard, separator, member = uri.partition(".tar#")
    return shard + ".tar" if separator and member else uri


def source_identity(uri: str, options: StorageOptions | None = None) -> str | None:
    """The identity of the picture at `uri` as storage gives it without reading it (see the module docstring);
    None for an http(s) URI or a picture that is not there. Raises StorageError when storage cannot answer."""
    if uri is None or uri.startswith(_HTTP):
        return None
    uri = holder_of(uri)
    options = options or StorageOptions()
    filesystem, path = resolve(uri, options)

    def identify() -> str | None:
        if isinstance(filesystem, pafs.S3FileSystem):
            with filesystem.open_input_file(path) as stream:  # one HEAD; nothing is downloaded
                etag = (stream.metadata() or {}).get("ETag")
            if etag:
                return "etag:" + (etag.decode() if isinstance(etag, bytes) else str(etag)).strip('"')
        info = filesystem.get_file_info(path)
        if info.type != pafs.FileType.File:
            return None
        return f"size:{info.size};mtime_ns:{info.mtime_ns}"

    try:
        return bounded(filesystem, identify, f"checking {redact_uri(uri)}", options)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot check {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc


def source_identities(uris: Sequence[str | None], options: StorageOptions | None = None,
                      threads: int = IDENTITY_THREADS) -> list[str | None]:
    """`source_identity` of each URI (in order), `threads` at a time; a URI asked twice is asked once."""
    uris = [None if uri is None else holder_of(uri) for uri in uris]
    distinct = list(dict.fromkeys(uri for uri in uris if uri is not None))
    if not distinct:
        return [None] * len(uris)
    options = options or StorageOptions()
    local = [uri for uri in distinct if not uri.startswith(_HTTP) and _is_local(uri, options)]
    found = dict(zip(local, _local_identities(local, options)))
    remote = [uri for uri in distinct if uri not in found]
    if remote:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(remote)))) as pool:
            found.update(zip(remote, pool.map(lambda uri: source_identity(uri, options), remote)))
    return [None if uri is None else found[uri] for uri in uris]


def _is_local(uri: str, options: StorageOptions) -> bool:
    try:
        return isinstance(resolve(uri, options)[0], pafs.LocalFileSystem)
    except StorageError:
        return False  # a scheme not allowed: source_identity says so


def _local_identities(uris: list[str], options: StorageOptions) -> list[str | None]:
    """Local pictures in one call of the filesystem for all of them (a stat each, in C++: a few µs a picture)."""
    if not uris:
        return []
    filesystem = pafs.LocalFileSystem()
    try:
        infos = filesystem.get_file_info([resolve(uri, options)[1] for uri in uris])
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot check local pictures: {type(exc).__name__}: {exc}") from exc
    return [f"size:{info.size};mtime_ns:{info.mtime_ns}" if info.type == pafs.FileType.File else None
            for info in infos]
