"""manifest: schema checks, manifest files, rows expanded into edit requests, per-row validation."""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffedit_batch.data.manifest import (
    MANIFEST_COLUMNS,
    EditRequest,
    ManifestError,
    check_manifest_schema,
    expand_edits,
    manifest_base_dir,
    manifest_files,
    manifest_reference_markdown,
    read_manifest_schema,
    validate_request,
)

GOOD = pa.schema(
    [
        ("id", pa.string()),
        ("image", pa.large_string()),
        ("source_prompt", pa.string()),
        ("target_prompt", pa.dictionary(pa.int32(), pa.string())),
        ("target_prompts", pa.large_list(pa.large_string())),
        ("seed", pa.int32()),
        ("source_concept", pa.null()),  # all-null column as pandas writes it
        ("photographer", pa.string()),  # extra columns pass through
    ]
)


# --- schema -----------------------------------------------------------------------------------


def test_good_schema_passes():
    check_manifest_schema(GOOD)
    check_manifest_schema(pa.schema([("id", pa.string()), ("image", pa.string()), ("target_concept", pa.string())]))


def test_one_error_names_every_bad_column():
    schema = pa.schema(
        [
            ("image", pa.string()),
            ("seed", pa.string()),
            ("target_prompt", pa.string()),
            ("target_prompts", pa.int64()),
            ("source_prompt", pa.list_(pa.string())),
        ]
    )
    with pytest.raises(ManifestError) as caught:
        check_manifest_schema(schema)
    message = str(caught.value)
    assert "'id'" not in message  # optional: without it a row's id is its place, '<file>:<row>'
    assert "column 'seed' has type string, expected an integer" in message
    assert "column 'target_prompts' has type int64, expected a list of strings" in message
    assert "column 'source_prompt' has type list<item: string>, expected a string" in message
    assert "image" not in message.replace("'image'", "")  # the good column is not blamed


def test_required_column_cannot_be_all_null_type():
    schema = pa.schema([("id", pa.string()), ("image", pa.null()), ("target_prompt", pa.string())])
    with pytest.raises(ManifestError, match="column 'image' has type null, expected a URI string, binary, or an "
                                            "image struct"):
        check_manifest_schema(schema)


def test_manifest_without_any_target_column_is_refused():
    with pytest.raises(ManifestError, match="no target column"):
        check_manifest_schema(pa.schema([("id", pa.string()), ("image", pa.string()), ("source_prompt", pa.string())]))


def test_manifest_columns_document_every_column():
    names = [c.name for c in MANIFEST_COLUMNS]
    assert names[:2] == ["id", "image"] and len(set(names)) == len(names)
    assert {c.name for c in MANIFEST_COLUMNS if c.required} == {"image"}
    kinds = ("string", "integer", "string list", "image", "picture", "box list")
    assert all(c.description and c.kind in kinds for c in MANIFEST_COLUMNS)
    table = manifest_reference_markdown().splitlines()
    assert len(table) == 2 + len(MANIFEST_COLUMNS)
    assert table[2].startswith("| `id` | string | no |")


# --- files ------------------------------------------------------------------------------------


def _write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _table(ids, seed_type=pa.int64()):
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "image": pa.array([f"{i}.png" for i in ids], pa.string()),
            "target_prompt": pa.array(["a cat"] * len(ids), pa.string()),
            "seed": pa.array([str(i) if seed_type == pa.string() else i for i in range(len(ids))], seed_type),
        }
    )


def test_manifest_folder_files_schema_and_base_dir(tmp_path):
    folder = tmp_path / "manifest"
    _write(folder / "b.parquet", _table(["b"]))
    _write(folder / "a.parquet", _table(["a"], pa.int32()))
    _write(folder / "nested" / "c.parquet", _table(["c"]))
    (folder / "_SUCCESS").write_text("")
    (folder / ".a.parquet.tmp").write_text("partial")
    (folder / "_common_metadata.parquet").write_text("not read")
    assert manifest_files(str(folder)) == [str(folder / n) for n in ("a.parquet", "b.parquet", "nested/c.parquet")]
    schema = read_manifest_schema(str(folder))
    assert schema.names == ["id", "image", "target_prompt", "seed"]
    assert pa.types.is_integer(schema.field("seed").type)
    assert manifest_base_dir(str(folder)) == str(folder)
    assert manifest_base_dir(str(folder / "a.parquet")) == str(folder)
    assert manifest_files(str(folder / "a.parquet")) == [str(folder / "a.parquet")]


def test_bad_file_in_a_folder_is_named(tmp_path):
    _write(tmp_path / "good.parquet", _table(["a"]))
    _write(tmp_path / "bad.parquet", _table(["b"], pa.string()))
    with pytest.raises(ManifestError, match=r"bad\.parquet: .*column 'seed' has type string"):
        read_manifest_schema(str(tmp_path))


def test_missing_empty_and_unreadable_manifests(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        manifest_files(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="holds no .parquet file"):
        manifest_files(str(tmp_path / "empty"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ManifestError, match="cannot read manifest file .*junk.parquet"):
        read_manifest_schema(str(tmp_path / "junk.parquet"))


# --- rows -------------------------------------------------------------------------------------


def test_single_target_row():
    [req] = expand_edits(
        {"id": "r1", "image": " cats/a.png ", "source_prompt": "  a cat ", "target_prompt": "a dog", "seed": 7},
        base_dir="s3://b/m",
    )
    assert req == EditRequest(
        edit_id="r1", row_id="r1", source_image_uri="s3://b/m/cats/a.png",
        source_prompt="a cat", target_prompt="a dog", seed=7,
    )


def test_target_prompt_then_target_prompts_share_the_row():
    reqs = expand_edits(
        {"id": "r", "image": "/x.png", "source_prompt": "a bowl of fruits",
         "target_prompt": "a bowl of pears", "target_prompts": ["a bowl of apples", "  ", "a bowl of figs"]}
    )
    assert [r.edit_id for r in reqs] == ["r", "r#0", "r#1", "r#2"]
    assert [r.target_prompt for r in reqs] == ["a bowl of pears", "a bowl of apples", None, "a bowl of figs"]
    assert [r.target_index for r in reqs] == [None, 0, 1, 2]
    assert {r.source_image_uri for r in reqs} == {"/x.png"} and {r.row_id for r in reqs} == {"r"}
    assert validate_request(reqs[2]) == "target_prompts[1] is missing or empty"


def test_row_without_target_still_yields_one_request():
    [req] = expand_edits({"id": "r", "image": "/x.png", "source_prompt": "a", "target_prompt": "", "target_prompts": []})
    assert req.edit_id == "r" and req.target_prompt is None
    assert "no target" in validate_request(req)


def test_concept_row_is_valid_without_prompts():
    [req] = expand_edits({"id": "r", "image": "/x.png", "source_concept": "fruits", "target_concept": "pears"})
    assert validate_request(req) is None


def test_pandas_and_numpy_values_become_plain_python():
    [req] = expand_edits(
        {"id": np.str_("r"), "image": "/x.png", "source_prompt": "a", "target_prompt": None,
         "target_prompts": np.array(["b"], dtype=object), "seed": float("nan")}
    )
    assert req.edit_id == "r#0" and req.seed is None
    [req] = expand_edits({"id": "r", "image": "/x.png", "target_prompt": "b", "seed": np.int64(5)})
    assert req.seed == 5 and type(req.seed) is int
    [req] = expand_edits({"id": "r", "image": "/x.png", "target_prompt": "b", "seed": 3.0})
    assert req.seed == 3 and type(req.seed) is int


def test_to_dict_holds_plain_values():
    req = EditRequest("r#1", "r", "/x.png", "a", "b", None, 42, None, None, 1)
    row = req.to_dict()
    assert all(type(v) in (str, int, type(None)) for v in row.values())
    assert EditRequest(**row) == req


@pytest.mark.parametrize(
    "row, caption_available, message",
    [
        ({"id": "r", "image": "/x", "source_prompt": "a", "target_prompt": "b"}, False, None),
        ({"id": None, "image": "/x", "source_prompt": "a", "target_prompt": "b"}, False, "row has no id"),
        ({"id": "r", "image": "  ", "source_prompt": "a", "target_prompt": "b"}, False, "image is missing"),
        ({"id": "r", "image": "/x", "target_prompt": "b"}, False, "no source"),
        ({"id": "r", "image": "/x", "target_prompt": "b"}, True, None),
        ({"id": "r", "image": "/x", "source_prompt": " \t", "target_prompt": "b"}, False, "no source"),
        ({"id": "r", "image": "/x", "source_prompt": 5, "target_prompt": "b"}, False, "source_prompt must be a string, got int"),
        ({"id": "r", "image": "/x", "source_prompt": "a", "target_prompt": None}, False, "no target"),
        ({"id": "r", "image": "/x", "source_prompt": "a", "target_prompt": "b", "seed": "7"}, False, "seed must be an integer"),
    ],
)
def test_validate_request(row, caption_available, message):
    [req] = expand_edits(row)
    result = validate_request(req, caption_available=caption_available)
    if message is None:
        assert result is None
    else:
        assert message in result


# --- folders as Spark and Hadoop leave them (issue 27) ------------------------------------------


def test_folders_of_uncommitted_attempts_are_not_manifest_parts(tmp_path):
    folder = tmp_path / "manifest"
    _write(folder / "part-0.parquet", _table(["a"]))
    _write(folder / "nested" / "part-1.parquet", _table(["b"]))
    _write(folder / "_temporary" / "0" / "task_1" / "part-0.parquet", _table(["stale"]))  # Spark's attempt
    _write(folder / ".staging" / "part-9.parquet", _table(["hidden"]))
    _write(folder / "nested" / "_attempt" / "part-2.parquet", _table(["deeper"]))
    assert manifest_files(str(folder)) == [str(folder / "nested" / "part-1.parquet"), str(folder / "part-0.parquet")]


# --- nothing to edit (issue 27) ----------------------------------------------------------------


@pytest.mark.parametrize("row, index, message", [
    ({"source_prompt": "a cat", "target_prompt": "A  cat "}, 0, "target_prompt equals source_prompt ('a cat')"),
    ({"source_prompt": "a cat", "target_prompts": ["a dog", "a cat"]}, 1, "target_prompts[1] equals source_prompt"),
    ({"source_concept": "fruits", "target_concept": "Fruits"}, 0, "target_concept equals source_concept"),
])
def test_a_target_that_equals_its_source_is_an_invalid_row_saying_why(row, index, message):
    requests = expand_edits({"id": "r", "image": "/x.png", **row})
    problem = validate_request(requests[index])
    assert problem.startswith(message) and "nothing to edit" in problem
    assert all(validate_request(other) is None for k, other in enumerate(requests) if k != index)


def test_a_target_that_only_resembles_its_source_or_is_of_another_kind_is_an_edit():
    for row in ({"source_prompt": "a cat", "target_prompt": "a cat."},  # punctuation: a (tiny) edit
                {"source_prompt": "fruits", "target_concept": "fruits"},  # a prompt against a concept's captions
                {"source_concept": "cat", "target_prompt": "cat"},
                {"target_prompt": "a cat"}):  # the source comes from a caption
        [request] = expand_edits({"id": "r", "image": "/x.png", **row})
        assert validate_request(request, caption_available=True) is None, row
