"""A local S3 for tests: moto in server mode on 127.0.0.1, shared by the whole test session.

Use it from any test package's conftest.py::

    from tests.s3_server import s3_server  # noqa: F401  (re-exported as a fixture)

or list ``"tests.s3_server"`` in a top-level conftest's ``pytest_plugins``. Tests take the
``s3_server`` fixture and create their own bucket with ``s3_server.make_bucket()``.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from diffedit_batch.data.storage import StorageOptions

# Fake credentials: the AWS SDKs (pyarrow's and boto3) refuse to sign without some.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # No instance-metadata lookups: they time out slowly off EC2.
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Settings from the developer's shell that would point the SDKs elsewhere.
_UNSET_ENV = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class S3Server:
    """A running moto S3 endpoint. ``options`` reach it through ``diffedit_batch.data.storage``.

    ``requests`` holds every request the server answered, as (method, path, query string): tests count what an
    operation costs in storage requests (clear it first).
    """

    endpoint_url: str
    options: StorageOptions
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    _counter: itertools.count = field(default_factory=itertools.count, repr=False)

    def client(self):
        """A boto3 S3 client for this endpoint (for test set-up and inspection)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name when None); return its ``s3://name`` URI."""
        name = name or f"test-bucket-{os.getpid()}-{next(self._counter)}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 on a free 127.0.0.1 port with fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        for name in _UNSET_ENV:
            env.delenv(name, raising=False)
        for name, value in FAKE_AWS_ENV.items():
            env.setenv(name, value)
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            s3 = S3Server(endpoint, StorageOptions(s3_endpoint_url=endpoint, s3_region="us-east-1"))
            app = server._server.app  # werkzeug's WSGI server, serving in a thread of this process

            def counting(environ, start_response):
                s3.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", "")))
                return app(environ, start_response)

            server._server.app = counting
            yield s3
        finally:
            server.stop()
