"""Fingerprints: short digests of what made an edit, kept in its record, so a re-run tells an edit made for this
very request under these settings from one made for another.

- The **request fingerprint** digests what one edit was asked for: `REQUEST_FINGERPRINT_FIELDS` of its request
  (the picture's URI, the prompts, the concepts, the seed, which target of its row). Change a row's target prompt
  and its edit's request fingerprint changes.
- The **settings fingerprint** digests the job's settings that change pixels, as plain nested dicts (which
  settings count is `config.fingerprint`'s decision, not this module's): change `edit.guidance_scale` and every
  settings fingerprint changes.

Both are 16 hex digits (64 bits of blake2b): a fingerprint is only ever compared with the fingerprints of the same
edit id, so a collision would need one edit's old and new request to collide.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .storage import redact_uri

__all__ = ["REQUEST_FINGERPRINT_FIELDS", "request_fingerprint", "settings_differences", "settings_fingerprint"]

# What determines one edit, besides the settings. A candidate's draw (several edits per request) is one more name.
REQUEST_FINGERPRINT_FIELDS = (
    "source_image_uri", "source_prompt", "target_prompt", "inversion_prompt", "source_concept", "target_concept",
    "seed", "target_index",
)
REGION_FINGERPRINT_FIELDS = ("region_boxes", "region_mask_uri", "region_mask")
_URI_FIELD = "source_image_uri"  # counted as records store it: credentials redacted
_NULL = "\x00"  # stands for a missing value: no text holds it after a manifest's strings are read
_SEPARATOR = "\x1f"


def request_fingerprint(request: Mapping[str, Any]) -> str:
    """The fingerprint of an edit request (a plan row or an `EditRequest.to_dict()`): its
    `REQUEST_FINGERPRINT_FIELDS`, in that order. The picture's URI counts as records store it, credentials
    redacted, so a presigned URL signed anew each night is the same request."""
    digest = hashlib.blake2b(digest_size=8)
    get = request.get  # a plan asks for 10^7 of these: one comprehension, no per-field branches
    parts = [_NULL if (value := get(name)) is None else str(redact_uri(value) if name == _URI_FIELD else value)
             for name in REQUEST_FINGERPRINT_FIELDS]
    # A region counts when there is one (a request without one keeps the fingerprint it had before regions).
    for name in REGION_FINGERPRINT_FIELDS:
        value = request.get(name)
        if value is not None:
            if isinstance(value, bytes):
                value = hashlib.blake2b(value, digest_size=8).hexdigest()
            elif name == "region_mask_uri":
                value = redact_uri(value)
            parts.append(f"{name}={value}")
    digest.update(_SEPARATOR.join(parts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """The fingerprint of settings given as JSON-serialisable nested dicts: a digest of their canonical JSON
    (sorted keys), so the order in which keys were set does not matter; a number counts by its value (YAML's `7`
    and `7.0` are one guidance scale)."""
    text = json.dumps(_numbers_as_floats(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def settings_differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What differs between two settings (sections of keys), one `section.key: before -> after` each in key order;
    a key on one side only shows `(none)` on the other, a section on one side only `(not used)`."""
    lines = []
    for section in sorted(set(before) | set(after)):
        old, new = before.get(section), after.get(section)
        if not isinstance(old, Mapping) or not isinstance(new, Mapping):
            lines.append(f"{section}: {'(used)' if old is not None else '(not used)'} -> "
                         f"{'(used)' if new is not None else '(not used)'}")
            continue
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new or _numbers_as_floats(old[key]) != _numbers_as_floats(new[key]):
                lines.append(f"{section}.{key}: {_shown(old, key)} -> {_shown(new, key)}")
    return lines


def _shown(section: Mapping[str, Any], key: str) -> str:
    if key not in section:
        return "(none)"
    return json.dumps(section[key], default=str)


def _numbers_as_floats(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _numbers_as_floats(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_floats(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
