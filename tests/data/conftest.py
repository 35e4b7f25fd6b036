"""Fixtures of the data-layer tests: the shared local S3 server."""

from tests.s3_server import s3_server  # noqa: F401  (a session fixture, re-exported for pytest)
