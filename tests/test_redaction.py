"""Credentials inside URIs never reach a log, a record or a message."""

from __future__ import annotations

import logging

import pytest

from diffedit_batch.data.records import record_from_row
from diffedit_batch.data.storage import StorageError, read_bytes
from diffedit_batch.redaction import install_log_redaction, redact_text, redact_uri, redact_values

SECRET_URIS = [
    ("s3://AKIAEXAMPLE:wJalr/XUtnFEMI+K7MDENG@bucket/pictures/a.png", "s3://bucket/pictures/a.png"),
    ("gs://user:pa55word@bucket/a.png", "gs://bucket/a.png"),
    ("https://user:pa55word@host.example:8443/a.png?X-Amz-Signature=deadbeef&x=1", "https://host.example:8443/a.png"),
    ("s3://bucket/a.png?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeef",
     "s3://bucket/a.png?X-Amz-Credential=***&X-Amz-Signature=***"),
]


@pytest.mark.parametrize(("uri", "expected"), SECRET_URIS)
def test_uris_lose_their_credentials(uri, expected):
    assert redact_uri(uri) == expected
    message = redact_text(f"cannot read {uri}: boom")
    assert message.startswith("cannot read ") and expected.split("?")[0] in message
    for secret in ("wJalr", "pa55word", "deadbeef", "AKIAEXAMPLE"):
        assert secret not in message


@pytest.mark.parametrize("uri", ["s3://bucket/dir:x/a@b.png", "/local/a@b.png", "s3://bucket/k.png", "relative/a.png"])
def test_uris_without_credentials_are_unchanged(uri):
    assert redact_uri(uri) == uri and redact_text(uri) == uri


def test_records_store_neither_secret_uris_nor_secret_messages():
    uri, expected = SECRET_URIS[0]
    record = record_from_row({"edit_id": "a", "row_id": "a", "status": "error", "error": f"cannot read {uri}: x",
                              "error_class": "storage", "source_image_uri": uri}, "model", "run")
    assert record["source_image_uri"] == expected and "wJalr" not in record["error"]


def test_object_store_uris_with_credentials_are_refused_without_echoing_them():
    with pytest.raises(StorageError) as error:
        read_bytes(SECRET_URIS[0][0])
    assert "wJalr" not in str(error.value) and "AKIAEXAMPLE" not in str(error.value)
    assert "environment" in str(error.value)


def test_every_log_record_is_redacted(caplog):
    install_log_redaction()  # installed on import already; installing twice is harmless
    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("anything").info("fetching %s", SECRET_URIS[2][0])
    assert "pa55word" not in caplog.text and "deadbeef" not in caplog.text and "host.example" in caplog.text


def test_configs_are_redacted_value_by_value():
    config = {"storage": {"s3_endpoint_url": "https://minio:s3cret@minio.local:9000"}, "job": {"batch_size": 8},
              "list": ["s3://K:S@b/x"]}
    assert redact_values(config) == {"storage": {"s3_endpoint_url": "https://minio.local:9000"},
                                     "job": {"batch_size": 8}, "list": ["s3://b/x"]}


def test_a_logged_traceback_is_redacted_too(caplog):
    with caplog.at_level(logging.INFO):
        try:
            raise OSError(f"cannot open {SECRET_URIS[2][0]}")
        except OSError:
            logging.getLogger("anything").exception("fetch failed")
    assert "Traceback" in caplog.text and "OSError" in caplog.text
    assert "pa55word" not in caplog.text and "deadbeef" not in caplog.text


def test_uris_with_nothing_to_redact_come_back_as_they_are_and_the_rest_still_redacted():
    """redact_uri returns a URI without user info, parameters or an http(s) scheme at once (a plan asks 10^7
    times); every other URI still goes through urlsplit."""
    from diffedit_batch.redaction import redact_uri

    for uri in ("/data/pictures/a.png", "pictures/a b.png", "s3://bucket/key.png", "gs://b/k?x", "file:///a/b.png"):
        assert redact_uri(uri) == uri
    assert redact_uri("https://host/a.png?x") == "https://host/a.png"  # no '=' or '@', still a query dropped
    assert redact_uri("HTTPS://host/a.png#part") == "https://host/a.png"
    assert redact_uri(" https://u:pw@host/a.png") == "https://host/a.png"
    assert redact_uri("s3://KEY:SECRET@bucket/a.png") == "s3://bucket/a.png"
    assert redact_uri("gs://b/k.png?X-Goog-Signature=abc") == "gs://b/k.png?X-Goog-Signature=***"
