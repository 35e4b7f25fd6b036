"""Thumbnails of each successful edit: input, input with the mask overlaid, edit. Small JPEGs, made in threads.

Names derive from the record (``<output_key(id)>-<run hash>-{in,mask,edit}.jpg``), so a re-run of the
report reuses the thumbnails that exist and makes only the missing ones; an id edited again by a later run
gets new names. Work is bounded: at most ``4 * workers`` rows are in flight, whatever the manifest's size.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from diffedit_batch.data.images import decode_image
from diffedit_batch.data.inputs import read_source_image
from diffedit_batch.data.outputs import OutputReader
from diffedit_batch.data.storage import StorageOptions, join, output_key, write_bytes_atomic

log = logging.getLogger(__name__)

KINDS = ("in", "mask", "edit")
_OVERLAY = np.array([255, 40, 40], np.float32)  # the mask's tint
_MAX_SOURCE_PIXELS = 200_000_000


def thumb_key(record: dict) -> str:
    """The thumbnails' shared name stem for an ok record."""
    run = hashlib.blake2b(str(record.get("run_id")).encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{output_key(record['id'])}-{run}"


def thumb_names(key: str) -> list[str]:
    return [f"{key}-{kind}.jpg" for kind in KINDS]


def _jpeg(image: Image.Image, quality: int = 80) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _shrunk(image: Image.Image, size: int) -> Image.Image:
    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def make_thumbnails(record: dict, size: int, reader: OutputReader) -> dict[str, bytes]:
    """JPEG bytes of the three thumbnails of an ok record (longer side ``size`` px), keyed by kind. The outputs
    are read by their record URIs: files, or members of the job's shards; the source as the input holds it (a file,
    or a picture embedded in a Parquet row or a WebDataset shard)."""
    source_bytes = read_source_image(record["source_image_uri"], reader.options)
    source = _shrunk(decode_image(source_bytes, max_pixels=_MAX_SOURCE_PIXELS), size)
    edit = _shrunk(decode_image(reader.read(record["image_uri"]), max_pixels=_MAX_SOURCE_PIXELS), size)
    with Image.open(io.BytesIO(reader.read(record["mask_uri"]))) as mask_png:
        mask = np.asarray(mask_png.convert("L").resize(source.size, Image.Resampling.NEAREST)) > 127
    pixels = np.asarray(source, np.float32)
    pixels[mask] = 0.45 * pixels[mask] + 0.55 * _OVERLAY
    overlay = Image.fromarray(pixels.round().astype(np.uint8), "RGB")
    return {"in": _jpeg(source), "mask": _jpeg(overlay), "edit": _jpeg(edit)}


class ThumbnailWriter:
    """Makes and writes thumbnails in a thread pool; ``submit`` blocks while too many rows are in flight."""

    def __init__(self, folder_uri: str, size: int, options: StorageOptions | None, workers: int, existing: set[str]):
        self.folder_uri = folder_uri
        self.size = size
        self.options = options
        self.reader = OutputReader(options, cache_shards=max(2, workers))
        self.existing = existing
        self.made = self.reused = self.failed = 0
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="thumbs")
        self._in_flight: deque[Future] = deque()
        self._limit = 4 * max(1, workers)

    def submit(self, record: dict, key: str) -> None:
        """Make the record's thumbnails unless they all exist already."""
        if all(name in self.existing for name in thumb_names(key)):
            self.reused += 1
            return
        while len(self._in_flight) >= self._limit:
            self._collect(self._in_flight.popleft())
        self._in_flight.append(self._pool.submit(self._write, record, key))

    def _write(self, record: dict, key: str) -> None:
        for kind, data in make_thumbnails(record, self.size, self.reader).items():
            write_bytes_atomic(join(self.folder_uri, f"{key}-{kind}.jpg"), data, self.options)

    def _collect(self, future: Future) -> None:
        try:
            future.result()
            self.made += 1
        except Exception as error:  # noqa: BLE001 - a missing picture costs its thumbnails, not the report
            self.failed += 1
            log.warning("no thumbnails for a record: %s: %s", type(error).__name__, error)

    def close(self) -> None:
        while self._in_flight:
            self._collect(self._in_flight.popleft())
        self._pool.shutdown()

    def __enter__(self) -> "ThumbnailWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
