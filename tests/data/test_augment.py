"""Prompt templates, how many targets a row edits (per_image, balance_by), and what the plan makes of them."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from diffedit_batch.data.augment import Recipe, class_key, class_quota, draw_targets
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.templates import (
    TemplateProblem,
    check_template,
    fill_caption,
    placeholders,
    render,
    unknown_placeholders,
)
from diffedit_batch.data.worklist import requests_to_plan_rows

NAMES = {"label": ["cat", "dog", "bird"]}
TARGETS = ("a photo of a {label} in the snow", "a painting of a {label}", "a {label} at night", "a {label}, {style}")


def test_a_template_names_columns_and_a_classlabel_column_gives_its_class_name():
    assert placeholders("a {label} and a {label} by {artist}") == ["label", "artist"]
    assert render("a photo of a {label} by {artist}", {"label": 1, "artist": "Monet"}, NAMES) == \
        "a photo of a dog by Monet"
    assert render("a {label}", {"label": 7}, {}) == "a 7"  # not a ClassLabel: the value as text
    # {caption} stays for the captions stage, unless a column has that name
    text = render("{caption}, in the snow", {"label": 0}, NAMES)
    assert text == "{caption}, in the snow" and fill_caption(text, "a cat on a mat") == "a cat on a mat, in the snow"
    assert render("{caption}!", {"caption": "given"}, {}) == "given!"


def test_a_null_value_or_a_class_index_out_of_range_is_a_problem_naming_the_column():
    with pytest.raises(TemplateProblem, match="column 'label' is null"):
        render("a {label}", {"label": None}, NAMES)
    with pytest.raises(TemplateProblem, match="'label' holds 3, which is not a class index"):
        render("a {label}", {"label": 3}, NAMES)


@pytest.mark.parametrize("template, message", [
    ("a {label", "not a template"), ("a {}", "not a column name"), ("a {0}", "not a column name"),
    ("a {x.y}", "not a column name"), ("a {label!r}", "format or conversion"), ("a {label:>9}", "format"),
])
def test_a_template_that_is_not_one_is_refused(template, message):
    with pytest.raises(ValueError, match=message):
        check_template(template)


def test_unknown_placeholders_are_the_ones_no_column_has_and_caption_is_known():
    assert unknown_placeholders(["a {label} by {artist}", "{caption} {labl}"], ["id", "image", "label"]) == \
        ["artist", "labl"]


def _plan(rows, recipe, **kwargs):
    names = list(dict.fromkeys(name for row in rows for name in row))
    table = pa.Table.from_pylist([{"row_index": i, **{name: row.get(name) for name in names}}
                                  for i, row in enumerate(rows)])
    return requests_to_plan_rows(table, base_dir=None, job_seed=0, buckets=1, recipe=recipe, **kwargs).to_pylist()


def test_templates_make_the_prompts_edit_ids_keep_the_target_index_and_a_rows_own_targets_win():
    recipe = Recipe(source_template="a photo of a {label}", target_templates=TARGETS[:3], label_column="label",
                    class_names=NAMES)
    rows = [{"id": "a", "image": "/a.png", "label": 0},
            {"id": "b", "image": "/b.png", "label": 2, "target_prompts": ["an owl", "a crow"]},
            {"id": "c", "image": "/c.png", "label": 1, "source_prompt": "my dog", "target_prompt": "my cat"},
            {"id": "d", "image": "/d.png", "label": 1, "source_concept": "dog", "target_concept": "wolf"}]
    plan = {row["edit_id"]: row for row in _plan(rows, recipe)}
    assert sorted(plan) == ["a#0", "a#1", "a#2", "b#0", "b#1", "c", "d"]
    assert (plan["d"]["source_prompt"], plan["d"]["target_prompt"]) == (None, None)  # its concepts are its own
    assert plan["a#0"]["source_prompt"] == "a photo of a cat"
    assert plan["a#0"]["target_prompt"] == "a photo of a cat in the snow"
    assert plan["a#2"]["target_prompt"] == "a cat at night"
    assert plan["b#1"]["target_prompt"] == "a crow" and plan["b#1"]["source_prompt"] == "a photo of a bird"
    assert (plan["c"]["source_prompt"], plan["c"]["target_prompt"]) == ("my dog", "my cat")
    assert {row["class_name"] for row in plan.values()} == {"cat", "bird", "dog"}
    assert all(row["status"] == Status.PENDING for row in plan.values())


def test_a_null_value_a_template_needs_makes_one_invalid_row_naming_the_column():
    recipe = Recipe(source_template="a photo of a {label}", target_templates=TARGETS, class_names=NAMES)
    [row] = _plan([{"id": "a", "image": "/a.png", "label": 0, "style": None}], recipe)
    assert (row["edit_id"], row["status"], row["error_class"]) == ("a", Status.ERROR, ErrorClass.INVALID_ROW)
    assert "column 'style' is null" in row["error"]


def test_per_image_draws_k_targets_from_the_rows_seed_stably():
    assert draw_targets(5, 4, 2) == draw_targets(5, 4, 2)
    for seed in range(20):
        draws = [set(draw_targets(seed, 6, k)) for k in range(7)]
        assert all(len(draw) == k for k, draw in enumerate(draws))
        assert all(draws[k] <= draws[k + 1] for k in range(6))  # a larger K keeps the smaller K's draws
    assert len({tuple(draw_targets(seed, 6, 2)) for seed in range(50)}) > 5  # rows draw different targets

    rows = [{"id": f"r{i}", "image": f"/{i}.png", "label": i % 3, "seed": i} for i in range(30)]
    two = _plan(rows, Recipe(target_templates=TARGETS[:3], source_template="a {label}", per_image=2, class_names=NAMES))
    three = _plan(rows, Recipe(target_templates=TARGETS[:3], source_template="a {label}", per_image=3,
                               class_names=NAMES))
    assert len(two) == 60 and len(three) == 90
    assert {row["edit_id"] for row in two} <= {row["edit_id"] for row in three}
    # ids keep the index in prompts.targets, and every target index is drawn by some rows
    assert {row["edit_id"].split("#")[1] for row in two} == {"0", "1", "2"}
    by_id = {row["edit_id"]: row["target_prompt"] for row in two}
    assert all(by_id[edit_id] == TARGETS[int(edit_id[-1])].format(label=NAMES["label"][int(edit_id[1:-2]) % 3])
               for edit_id in by_id)


def test_class_quotas_spread_per_class_edits_evenly_over_a_classs_rows():
    for rows in (1, 3, 7, 40):
        for per_class in (1, 5, 12, 100):
            quotas = [class_quota(rank, rows, per_class) for rank in range(rows)]
            assert sum(quotas) == per_class and max(quotas) - min(quotas) <= 1


def test_balance_gives_each_class_its_edits_or_as_many_as_its_rows_allow():
    # a skewed set: 40 cats, 6 dogs, 1 bird; 3 targets each; 12 edits per class
    labels = [0] * 40 + [1] * 6 + [2]
    rows, ranks, seen = [], [], Counter()
    for i, label in enumerate(labels):
        rows.append({"id": f"r{i}", "image": f"/{i}.png", "label": label, "class_rank": seen[label]})
        seen[label] += 1
    counts = {class_key(label): n for label, n in Counter(labels).items()}
    recipe = Recipe(source_template="a {label}", target_templates=TARGETS[:3], balance_by="label", per_class=12,
                    label_column="label", class_names=NAMES, class_counts=counts)
    plan = _plan(rows, recipe)
    per_class = Counter(row["class_name"] for row in plan)
    assert per_class == {"cat": 12, "dog": 12, "bird": 3}  # the bird has one row: its three targets
    per_row = Counter(row["row_id"] for row in plan)
    assert {per_row[f"r{i}"] for i in range(40, 46)} == {2}  # 12 dog edits over 6 rows: 2 each
    assert sorted(Counter(per_row[f"r{i}"] for i in range(40)).items()) == [(0, 28), (1, 12)]
    # with per_image a row makes at most that many
    capped = _plan(rows, Recipe(**{**recipe.__dict__, "per_image": 1}))
    assert Counter(row["class_name"] for row in capped) == {"cat": 12, "dog": 6, "bird": 1}


def test_a_null_class_is_an_invalid_row():
    recipe = Recipe(source_template="a {label}", target_templates=TARGETS[:1], balance_by="label", per_class=2,
                    label_column="label", class_names=NAMES, class_counts={"0": 1})
    [row] = _plan([{"id": "a", "image": "/a.png", "label": None, "source_prompt": "x", "class_rank": 0}], recipe)
    assert row["status"] == Status.ERROR and "'label' is null" in row["error"]


def test_region_boxes_travel_with_each_request_and_a_negative_box_is_an_invalid_row():
    plan = _plan([{"id": "a", "image": "/a.png", "source_prompt": "x", "target_prompts": ["y", "z"],
                   "region_boxes": [[1.5, 2, 3, 4]], "region_mask": "/masks/a.png"},
                  {"id": "b", "image": "/b.png", "source_prompt": "x", "target_prompt": "y",
                   "region_boxes": [[0, 0, -1, 4]]}], Recipe())
    rows = {row["edit_id"]: row for row in plan}
    assert rows["a#1"]["region_boxes"] == [[1.5, 2.0, 3.0, 4.0]] and rows["a#1"]["region_mask_uri"] == "/masks/a.png"
    assert rows["b"]["status"] == Status.ERROR and "negative size" in rows["b"]["error"]
    assert rows["a#0"]["request_fingerprint"] != _plan([{"id": "a", "image": "/a.png", "source_prompt": "x",
                                                         "target_prompts": ["y", "z"]}], Recipe())[0][
        "request_fingerprint"]


@pytest.mark.parametrize("objects", [
    {"bbox": [[1, 2, 3, 4], [5, 6, 7, 8]], "category": [0, 1]},  # the struct of lists datasets writes
    [{"bbox": [1, 2, 3, 4], "category": 0}, {"bbox": [5, 6, 7, 8], "category": 1}],  # a list of structs
])
def test_boxes_from_reads_both_bbox_layouts(objects):
    [row] = _plan([{"id": "a", "image": "/a.png", "source_prompt": "x", "target_prompt": "y", "objects": objects}],
                  Recipe(boxes_from="objects.bbox"))
    assert row["region_boxes"] == [[1, 2, 3, 4], [5, 6, 7, 8]] and row["status"] == Status.PENDING


def test_classlabel_names_come_from_the_datasets_metadata(tmp_path):
    import json

    import pyarrow.parquet as pq

    from diffedit_batch.data.inputs import inspect_input

    features = {"label": {"names": ["cat", "dog"], "_type": "ClassLabel"}, "id": {"dtype": "string", "_type": "Value"}}
    table = pa.table({"id": ["a"], "image": ["x.png"], "label": [1]}).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, tmp_path / "m.parquet")
    # the templates' class names are the input's (data.labels): prompts.targets make the targets
    spec = inspect_input(str(tmp_path / "m.parquet"), templated_targets=True).spec
    assert spec.class_names == {"label": ["cat", "dog"]}


def test_the_read_stage_ranks_each_row_within_its_class_from_its_files_offsets(tmp_path):
    import json

    import pyarrow.parquet as pq

    from diffedit_batch.data.storage import StorageOptions
    from diffedit_batch.data.inputs import read_input_rows

    pq.write_table(pa.table({"id": list("abcde"), "image": ["x.png"] * 5, "target_prompt": ["t"] * 5,
                             "label": [0, 1, 0, None, 0], "unused": [1] * 5}), tmp_path / "m.parquet")
    batch = pa.table({"file": [str(tmp_path / "m.parquet")], "first_row": [10],
                      "class_offsets": [json.dumps({class_key(0): 7})]})
    rows = [row for table in read_input_rows(batch, options=StorageOptions(), rows_per_block=2,
                                             extra_columns=("label",), class_column="label")
            for row in table.to_pylist()]
    assert [(row["id"], row["row_index"], row["class_rank"]) for row in rows] == [
        ("a", 10, 7), ("b", 11, 0), ("c", 12, 8), ("d", 13, 0), ("e", 14, 9)]
    assert json.loads(rows[0]["fields"]) == {"label": 0}  # what the recipe reads, and nothing unused


def test_a_region_mask_struct_with_neither_bytes_nor_path_is_an_invalid_row_not_a_row_without_a_region():
    plan = _plan([{"id": "a", "image": "/a.png", "source_prompt": "x", "target_prompt": "y",
                   "region_mask": {"bytes": None, "path": None}},
                  {"id": "b", "image": "/b.png", "source_prompt": "x", "target_prompt": "y",
                   "region_mask": {"bytes": b"\x89PNG", "path": "m.png"}},
                  {"id": "c", "image": "/c.png", "source_prompt": "x", "target_prompt": "y", "region_mask": None}],
                 Recipe())
    rows = {row["edit_id"]: row for row in plan}
    assert rows["a"]["status"] == Status.ERROR and rows["a"]["error_class"] == "invalid_row"
    assert "region_mask" in rows["a"]["error"] and "neither bytes nor path" in rows["a"]["error"]
    assert rows["b"]["status"] == Status.PENDING and rows["b"]["region_mask"] == b"\x89PNG"  # bytes win
    assert rows["c"]["status"] == Status.PENDING and rows["c"]["region_mask"] is None


def test_the_class_count_reads_a_file_without_the_class_column_as_rows_of_no_class(tmp_path):
    """A manifest folder's files may differ in columns (their schemas are unified): a file that lacks the balance_by
    column has rows of no class (each then an invalid_row naming it), not a count task that fails the run."""
    import pyarrow.parquet as pq

    from diffedit_batch.data.storage import StorageOptions
    from diffedit_batch.pipeline.planning import _class_keys

    pq.write_table(pa.table({"id": list("ab"), "label": [0, 1]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": list("cde")}), tmp_path / "b.parquet")
    batch = pa.table({"file": [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], "first_row": [0, 2]})
    keys = pa.concat_tables(_class_keys(batch, options=StorageOptions(), column="label")).to_pylist()
    assert keys == [{"first_row": 0, "class": "0"}, {"first_row": 0, "class": "1"}] + [
        {"first_row": 2, "class": None}] * 3


@pytest.mark.parametrize("recipe, column, value", [
    (Recipe(), "region_boxes", []),
    (Recipe(boxes_from="objects.bbox"), "objects", {"bbox": [], "category": []}),  # a picture with no objects
    (Recipe(boxes_from="objects.bbox"), "objects", []),
])
def test_an_empty_box_list_is_an_empty_region_and_null_is_no_region(recipe, column, value):
    """With region.mode inside, a picture whose box list is empty has nothing to edit (not everything)."""
    [empty] = _plan([{"id": "a", "image": "/a.png", "source_prompt": "x", "target_prompt": "y", column: value}],
                    recipe)
    [none] = _plan([{"id": "a", "image": "/a.png", "source_prompt": "x", "target_prompt": "y", column: None}],
                   recipe)
    assert empty["region_boxes"] == [] and none["region_boxes"] is None
    assert empty["request_fingerprint"] != none["request_fingerprint"]
