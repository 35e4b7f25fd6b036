"""What a local model folder holds, as one digest of its files' bytes: a fine-tune saved over the folder keeps every
name, size and safetensors header, so only the bytes tell it from the model it replaced.

Every file under the folder counts (weights, configs, tokenizer and scheduler files), but hidden ones (`.cache/`,
`.gitattributes`) and documentation (`*.md`, pictures): those change no pixel. Each file is read once in large
chunks and hashed with xxHash's XXH3-128 (about 10 GB/s a core; not cryptographic, which a fine-tune saved over a
folder does not need), files in parallel threads (the hash releases the GIL). The folder's digest is that of the
sorted (relative path, size, file digest) list, so a renamed or added file counts too.

File digests are cached in a small JSON file keyed by the file's real path, size and mtime (nanoseconds): a later
run pays one `stat` per file. A file rewritten in place gets a new mtime; one given back its old mtime on purpose
would not be noticed (delete the cache, `DIFFEDIT_BATCH_DIGEST_CACHE`, to hash again).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

__all__ = ["DIGEST_CACHE_ENV", "FolderDigest", "default_digest_cache", "folder_digest"]

log = logging.getLogger(__name__)

DIGEST_CACHE_ENV = "DIFFEDIT_BATCH_DIGEST_CACHE"
_CHUNK = 16 << 20
_SEGMENT = 256 << 20  # a file's digest is that of its segments' digests, hashed in parallel
_SKIPPED_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".webp")
_MAX_ENTRIES = 20_000  # the cache forgets its oldest entries past this
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class FolderDigest:
    """A folder's digest (`xxh3-128:` and 32 hex digits), and what computing it took: `files` counted, `bytes`
    in them, `hashed_bytes` read this time (0 when every file was in the cache), `seconds`."""

    digest: str
    files: int
    bytes: int
    hashed_bytes: int
    seconds: float


def default_digest_cache() -> str:
    """`DIFFEDIT_BATCH_DIGEST_CACHE`, else `$XDG_CACHE_HOME/diffedit-batch/model-digests.json` (`~/.cache/...`)."""
    if os.environ.get(DIGEST_CACHE_ENV):
        return os.environ[DIGEST_CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "diffedit-batch", "model-digests.json")


def folder_digest(folder: str, *, cache: str | None = "default", threads: int | None = None) -> FolderDigest:
    """The digest of the files under `folder` (see the module docstring). `cache`: the digest cache's path
    ("default": `default_digest_cache()`; None: no cache). Raises OSError when a file cannot be read."""
    import xxhash

    started = time.perf_counter()
    root = os.path.realpath(os.path.expanduser(folder))
    files = _model_files(root)
    cache_path = default_digest_cache() if cache == "default" else cache
    known = _read_cache(cache_path) if cache_path else {}
    entries, todo = [], []
    for relative, real, stat in files:
        key = _cache_key(real, stat)
        entries.append((relative, stat.st_size, key))
        if key not in known:
            todo.append((key, real, stat.st_size))
    hashed = {}
    if todo:
        # Large files are hashed in segments, every segment of every file in parallel: one 5 GB UNet file would
        # otherwise keep one core busy while the others wait.
        segments = [(index, offset, min(_SEGMENT, size - offset))
                    for index, (_, _, size) in enumerate(todo) for offset in range(0, max(size, 1), _SEGMENT)]
        workers = threads or min(8, max(4, os.cpu_count() or 1))  # a 16 MiB buffer each
        with ThreadPoolExecutor(max_workers=min(workers, len(segments)), thread_name_prefix="model-digest") as pool:
            parts = list(pool.map(lambda segment: _segment_digest(todo[segment[0]][1], *segment[1:]), segments))
        by_file: dict[int, list[str]] = {}
        for (index, _, _), part in zip(segments, parts):
            by_file.setdefault(index, []).append(part)
        for index, (key, _, _) in enumerate(todo):
            hashed[key] = xxhash.xxh3_128("".join(by_file[index]).encode()).hexdigest()
        if cache_path:
            _write_cache(cache_path, hashed)
    whole = xxhash.xxh3_128()
    for relative, size, key in sorted(entries):
        whole.update(f"{relative}\x1f{size}\x1f{hashed.get(key) or known[key]}\n".encode("utf-8", "surrogatepass"))
    return FolderDigest(digest=f"xxh3-128:{whole.hexdigest()}", files=len(entries),
                        bytes=sum(size for _, size, _ in entries),
                        hashed_bytes=sum(size for _, _, size in todo),
                        seconds=time.perf_counter() - started)


def _model_files(root: str) -> list[tuple[str, str, os.stat_result]]:
    """(path relative to `root`, real path, stat) of each file that counts, symlinks followed (a Hugging Face
    snapshot links to its blobs)."""
    found = []
    for folder, folders, names in os.walk(root, followlinks=True):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in names:
            if name.startswith(".") or name.lower().endswith(_SKIPPED_SUFFIXES):
                continue
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            stat = os.stat(real)
            if os.path.isfile(real):
                found.append((os.path.relpath(path, root).replace(os.sep, "/"), real, stat))
    return found


def _cache_key(real: str, stat: os.stat_result) -> str:
    return f"{real}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}"


def _segment_digest(path: str, offset: int, length: int) -> str:
    """The digest of `length` bytes of a file from `offset`, read in large chunks."""
    import xxhash

    digest = xxhash.xxh3_128()
    buffer = bytearray(min(_CHUNK, max(length, 1)))
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        file.seek(offset)
        left = length
        while left > 0:
            read = file.readinto(view[: min(len(buffer), left)])
            if not read:
                raise OSError(f"{path} became shorter while it was read")
            digest.update(view[:read])
            left -= read
    return digest.hexdigest()


def _read_cache(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return {}
    return {str(key): str(value) for key, value in data.items()} if isinstance(data, dict) else {}


def _write_cache(path: str, new: dict[str, str]) -> None:
    """Add `new` to the cache file (read again under a lock, written atomically); a cache that cannot be written
    only costs the next run a hash."""
    with _cache_lock:
        entries = _read_cache(path)
        entries.update(new)
        if len(entries) > _MAX_ENTRIES:
            entries = dict(list(entries.items())[-_MAX_ENTRIES:])
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".model-digests.", suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    json.dump(entries, file)
                os.replace(temp, path)
            except BaseException:
                try:
                    os.unlink(temp)
                except FileNotFoundError:
                    pass
                raise
        except OSError as error:
            log.warning("could not write the model digest cache %s (the next run hashes again): %s", path, error)
