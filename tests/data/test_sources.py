"""sources: a picture's identity as storage gives it without reading it (a stat, a HEAD), and its bytes' digest."""

from __future__ import annotations

import os

from diffedit_batch.data.sources import source_digest, source_identities, source_identity
from diffedit_batch.data.storage import write_bytes_atomic


def test_a_local_picture_is_its_size_and_mtime_and_a_missing_one_has_none(tmp_path):
    path = tmp_path / "p.png"
    path.write_bytes(b"first")
    before = source_identity(str(path))
    assert before.startswith("size:5;mtime_ns:")
    path.write_bytes(b"other")  # the same size, written again
    os.utime(path, ns=(1, 1))
    assert source_identity(str(path)) == "size:5;mtime_ns:1" != before
    assert source_identity(str(tmp_path / "gone.png")) is None
    # many at once: one call of the filesystem, the same answers
    assert source_identities([str(path), str(tmp_path / "gone.png"), None, str(path)]) == [
        "size:5;mtime_ns:1", None, None, "size:5;mtime_ns:1"]
    assert source_identity("https://example.com/p.png") is None  # never asked: says nothing without a GET
    assert source_digest(b"first") != source_digest(b"other") and len(source_digest(b"")) == 32


def test_an_s3_picture_is_its_etag_one_head_each_asked_once(s3_server):
    bucket = s3_server.make_bucket()
    uris = [f"{bucket}/a.png", f"{bucket}/b.png"]
    for uri, data in zip(uris, (b"one", b"two")):
        write_bytes_atomic(uri, data, s3_server.options)
    s3_server.requests.clear()
    found = source_identities([uris[0], uris[1], uris[0], None, f"{bucket}/gone.png"], s3_server.options)
    assert found[0] == found[2] != found[1] and found[0].startswith("etag:") and found[3:] == [None, None]
    assert [method for method, _, _ in s3_server.requests].count("GET") == 0
    assert sorted(path for method, path, _ in s3_server.requests if method == "HEAD")[:2] == sorted(
        "/" + uri.split("://", 1)[-1] for uri in uris)
    write_bytes_atomic(uris[0], b"replaced", s3_server.options)
    assert source_identity(uris[0], s3_server.options) != found[0]
