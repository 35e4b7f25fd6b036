"""The data layer against a real S3 protocol: moto in server mode, reached through pyarrow."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffedit_batch.data.manifest import manifest_base_dir, manifest_files, read_manifest_schema
from diffedit_batch.data.compaction import SUPERSEDED_SCHEMA, compact_records
from diffedit_batch.data.records import list_record_files, read_record_file, write_record_part
from diffedit_batch.data.storage import (
    StorageError,
    delete,
    exists,
    list_files,
    read_bytes,
    resolve,
    write_bytes_atomic,
)

pytestmark = pytest.mark.slow  # starts a server (once per session)


def test_write_read_list_delete_round_trip(s3_server):
    bucket, options = s3_server.make_bucket(), s3_server.options
    write_bytes_atomic(f"{bucket}/out/images/b.png", b"bee", options)
    write_bytes_atomic(f"{bucket}/out/images/a.png", b"ay", options)
    write_bytes_atomic(f"{bucket}/out/notes.txt", b"n", options)
    assert read_bytes(f"{bucket}/out/images/a.png", options) == b"ay"
    assert list_files(f"{bucket}/out", ".png", options) == [f"{bucket}/out/images/a.png", f"{bucket}/out/images/b.png"]
    assert exists(f"{bucket}/out/images/a.png", options)
    delete(f"{bucket}/out/images/a.png", options)
    assert not exists(f"{bucket}/out/images/a.png", options)
    # What other S3 clients see: exactly the bytes written.
    obj = s3_server.client().get_object(Bucket=bucket[5:], Key="out/images/b.png")
    assert obj["Body"].read() == b"bee"


def test_a_small_object_is_one_put(s3_server):
    bucket, options = s3_server.make_bucket(), s3_server.options
    s3_server.requests.clear()
    write_bytes_atomic(f"{bucket}/out/images/a.png", b"x" * 100_000, options)
    assert [method for method, _, _ in s3_server.requests] == ["PUT"]  # not a three-request multipart upload


def test_overwrite_and_large_object(s3_server):
    bucket, options = s3_server.make_bucket(), s3_server.options
    big = bytes(range(256)) * (12 * 1024 * 4)  # 12 MiB: past pyarrow's single-put threshold
    write_bytes_atomic(f"{bucket}/big.bin", b"old", options)
    write_bytes_atomic(f"{bucket}/big.bin", big, options)
    assert read_bytes(f"{bucket}/big.bin", options) == big
    limited = dataclasses.replace(options, max_read_bytes=1024)
    with pytest.raises(StorageError, match="read limit"):
        read_bytes(f"{bucket}/big.bin", limited)


def test_errors_are_storage_errors_without_credentials(s3_server):
    options = dataclasses.replace(s3_server.options, write_retries=1, retry_backoff_s=0.0)
    bucket = s3_server.make_bucket()
    with pytest.raises(StorageError, match="not found"):
        read_bytes(f"{bucket}/missing.png", options)
    with pytest.raises(StorageError, match="s3://no-such-bucket-here/x.png") as caught:
        write_bytes_atomic("s3://no-such-bucket-here/x.png", b"x", options)
    assert "AWS_SECRET" not in str(caught.value) and "testing" not in str(caught.value)


def test_endpoint_from_environment(s3_server, monkeypatch):
    bucket = s3_server.make_bucket()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    write_bytes_atomic(f"{bucket}/env.txt", b"via env")  # default StorageOptions
    assert read_bytes(f"{bucket}/env.txt", s3_server.options) == b"via env"


def test_manifest_folder_on_s3(s3_server):
    bucket, options = s3_server.make_bucket(), s3_server.options
    filesystem, _ = resolve(bucket, options)
    table = pa.table({"id": ["a"], "image": ["a.png"], "target_prompt": ["a dog"], "seed": pa.array([1], pa.int16())})
    for name in ("m/part-1.parquet", "m/part-0.parquet"):
        pq.write_table(table, f"{bucket[5:]}/{name}", filesystem=filesystem)
    assert manifest_files(f"{bucket}/m", options) == [f"{bucket}/m/part-0.parquet", f"{bucket}/m/part-1.parquet"]
    assert read_manifest_schema(f"{bucket}/m", options).names == ["id", "image", "target_prompt", "seed"]
    assert manifest_base_dir(f"{bucket}/m/part-0.parquet", options) == f"{bucket}/m"
    assert manifest_base_dir(f"{bucket}/m", options) == f"{bucket}/m"


def test_record_files_on_s3_cost_few_requests_each_and_compact(s3_server):
    """Resuming reads every record file: one listing per 1,000 files, then a few requests per file (the footer,
    then the three columns the plan needs), never a request per record."""
    prefix, options = s3_server.make_bucket() + "/job", s3_server.options
    files = 30
    for k in range(files):
        records = [{"id": f"e{k}-{i}", "row_id": f"e{k}-{i}", "status": "ok" if i else "error", "run_id": "run-1"}
                   for i in range(50)]
        write_record_part(prefix, records, options, part_name=f"run1-{k:03d}")
    s3_server.requests.clear()
    found = list_record_files(prefix, options)
    assert len(found.live) == files and sum(f.rows for f in found.live) == files * 50
    listing = [r for r in s3_server.requests if r[0] == "GET" and "list-type" in r[2]]
    assert len(listing) == 1 and len(s3_server.requests) - len(listing) <= 2 * files  # footers: <= 2 GETs a file
    s3_server.requests.clear()
    for file in found.live:
        read_record_file(file, options, columns=["id", "row_id", "status"])
    assert len(s3_server.requests) <= 3 * files and all(method == "GET" for method, _, _ in s3_server.requests)

    superseded = pa.Table.from_pylist([{"file": "part-run1-000.parquet", "id": "e0-0", "status": "error"}],
                                      schema=SUPERSEDED_SCHEMA)
    result = compact_records(prefix, options, records_per_file=1000, superseded=superseded, run_id="run-2")
    # 49 + 20 x 50 records reach 1,000 in the first merged file; the 9 files left make the one small file
    assert (result.superseded, result.merged, result.written, result.files_after) == (1, 30, 2, 2)
    live = list_record_files(prefix, options).live
    assert sorted(f.rows for f in live) == [450, 1049] and not list_record_files(prefix, options).dead
