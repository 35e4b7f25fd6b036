"""Credentials never printed or stored: URIs and messages with user info and signed-URL parameters removed.

Users put credentials where they should not (``s3://KEY:SECRET@bucket/...``, ``https://user:password@host/...``,
presigned URLs with ``X-Amz-Signature=``). Every URI the job stores (records, run files, shards' metadata) goes
through `redact_uri`, every message it stores through `redact_text`, and `install_log_redaction` makes every log
record of the process pass through `redact_text` too (installed when the package is imported, so Ray workers that
run the job's code have it as well).
"""

from __future__ import annotations

import logging
import re
import traceback
from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED", "install_log_redaction", "redact_text", "redact_uri", "redact_values"]

_HTTP = ("http", "https")
_NOT_HTTP = ("s3://", "gs://", "gcs://", "file://")  # URIs whose scheme urlsplit reads as it is spelt
# Credentials a URI can carry: user:password (or an S3 key pair) before the host, and signed-URL query parameters.
# An S3 secret key may hold "/" (not allowed in a URI's user info, but written so): on object-store schemes everything
# from a "KEY:" (no "/" before the colon: bucket names have neither) to the "@" is the key pair.
_USERINFO = re.compile(
    r"(?P<scheme>\b(?:s3|s3a|s3n|gs|gcs)://)(?P<userinfo>[^/@:\s]+:[^@\s]*@)"
    r"|(?P<other>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#\s@]*@)",
    re.IGNORECASE,
)
# A parameter name starts a query or follows `&`, a space or a quote; after a `.` it is a dotted name such as a
# config key (`section.key=value`), which is printed as typed.
_SECRET_PARAMETER = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<name>(?:X-Amz-(?:Signature|Credential|Security-Token)|X-Goog-(?:Signature|Credential)|"
    r"Signature|sig|"
    r"AWSAccessKeyId|access_token|token|api_key|apikey|key|password|secret)=)[^&\s#'\"]*",
    re.IGNORECASE,
)
REDACTED = "***"


def redact_uri(uri: str) -> str:
    """``uri`` as it may be printed or stored: user info (``s3://KEY:SECRET@bucket``, ``https://user:pw@host``)
    removed, and on http(s) the whole query (presigned URLs carry their signature there); on other schemes the
    values of credential-like query parameters (``X-Amz-Signature=``...) become ``***``."""
    if not isinstance(uri, str):
        return uri
    if "@" not in uri and "=" not in uri and (":" not in uri or uri.startswith(_NOT_HTTP)):
        return uri  # no user info, no parameter, and no http(s) query: nothing to redact (a plan asks 10^7 times)
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact_text(uri)
    if parts.scheme in _HTTP:
        host_and_port = parts.netloc.rpartition("@")[2]  # not .port: it raises on a port that is not a number
        return urlunsplit((parts.scheme, host_and_port, parts.path, "", ""))
    return redact_text(uri)


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with every credential a URI inside it carries replaced: user info
    dropped (``s3://KEY:SECRET@b/k`` -> ``s3://b/k``), signed-URL parameters' values -> ``***``."""
    if not isinstance(text, str) or ("@" not in text and "=" not in text):
        return text
    text = _USERINFO.sub(lambda match: match.group("scheme") or match.group("other"), text)
    return _SECRET_PARAMETER.sub(lambda match: match.group("name") + REDACTED, text)


def redact_values(value):
    """`value` (a config as plain dicts and lists) with `redact_text` applied to every string in it."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_values(item) for item in value]
    return value


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process (its message with its arguments filled in, and the traceback it
    carries), once."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacting_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it to logging's own error report
            return record
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # A traceback names URIs too: format it here, redacted (handlers use exc_text when it is set).
            record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(redacting_record)
    _installed = True
