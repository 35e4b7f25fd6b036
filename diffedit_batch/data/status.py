"""The words a row's fate is told in: its status while it travels and in its record, and its error classes."""

from __future__ import annotations


class Status:
    """A row's status. `PENDING` while it travels between stages; a record holds one of `RECORDED`."""

    PENDING = "pending"
    OK = "ok"
    ERROR = "error"
    DUPLICATE = "duplicate"
    FILTERED = "filtered"  # a candidate not kept: below a floor, or ranked below `candidates.keep`
    RECORDED = frozenset({OK, ERROR, DUPLICATE, FILTERED})
    DONE = frozenset({OK, FILTERED})  # a request whose records have these statuses was edited: resume skips it


class ErrorClass:
    """The short class of a failed row (the record's `error_class`); the `error` column says the details."""

    INVALID_ROW = "invalid_row"  # the manifest row cannot be edited as given (no id, no target, a bad seed...)
    DUPLICATE_ID = "duplicate_id"  # a later row with an id that an earlier row already has
    STORAGE = "storage"  # an input could not be read or an output could not be written
    IMAGE_DECODE = "image_decode"  # the input bytes are not a usable picture
    ENGINE = "engine"  # the diffusion model failed on the row
