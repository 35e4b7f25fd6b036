"""Regions at picture size, their constraint at latent size, and the pasted background."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from diffedit_batch.data.regions import (
    RegionProblem,
    editable_area,
    grow,
    latent_constraint,
    pack,
    parse_boxes,
    paste_background,
    region_mask_array,
    unpack,
)


def test_boxes_round_outward_clip_to_the_picture_and_a_negative_size_is_refused():
    area = editable_area(10, 8, boxes=[[1.5, 2.2, 2.1, 1.0], [8.5, 6.5, 10, 10]])
    expected = np.zeros((8, 10), bool)
    expected[2:4, 1:4] = True  # x 1.5..3.6 -> columns 1..3, y 2.2..3.2 -> rows 2..3
    expected[6:8, 8:10] = True  # past the picture: clipped
    assert (area == expected).all()
    with pytest.raises(RegionProblem, match="negative size"):
        parse_boxes([[0, 0, 3, -1]])
    with pytest.raises(RegionProblem, match="four numbers"):
        parse_boxes([[0, 0, 3]])
    assert parse_boxes(None) == [] and parse_boxes([[0, 0, 0, 0]]) == [[0.0, 0.0, 0.0, 0.0]]


def test_inside_keeps_to_the_region_and_outside_keeps_out_of_it():
    inside = editable_area(6, 6, boxes=[[1, 1, 2, 2]], mode="inside")
    outside = editable_area(6, 6, boxes=[[1, 1, 2, 2]], mode="outside")
    assert inside.sum() == 4 and (outside == ~inside).all()


def test_grow_px_grows_the_region_by_a_square():
    region = np.zeros((9, 9), bool)
    region[4, 4] = True
    assert grow(region, 2).sum() == 25 and grow(region, 2)[2:7, 2:7].all()
    assert editable_area(9, 9, boxes=[[4, 4, 1, 1]], grow_px=1).sum() == 9


def test_a_region_mask_of_another_size_is_resized_nearest_and_white_is_the_region():
    picture = Image.new("L", (4, 2), 0)
    picture.putpixel((0, 0), 255)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    mask = region_mask_array(buffer.getvalue(), 8, 4)
    assert mask.shape == (4, 8) and mask[:2, :2].all() and mask.sum() == 4
    with pytest.raises(ValueError, match="not a readable picture"):
        region_mask_array(b"not a png", 8, 4)


def test_at_latent_size_a_cell_that_touches_a_kept_pixel_is_kept():
    editable = np.ones((16, 16), bool)
    editable[0, 9] = False  # one kept pixel in cell (0, 1)
    constraint = latent_constraint(editable, 2, 2)
    assert constraint.tolist() == [[1, 0], [1, 1]]
    # a non-integer scale: a cell's rectangle is rounded outward
    editable = np.ones((10, 10), bool)
    editable[3, 0] = False  # 10 rows in 3 cells: row 3 is in cell 0 (rows 0..3.33) and cell 1 (3.33..6.67)
    assert latent_constraint(editable, 3, 2)[:, 0].tolist() == [0, 0, 1]


def test_pack_round_trips():
    area = np.random.default_rng(0).random((7, 13)) > 0.5
    assert (unpack(pack(area), 13, 7) == area).all()


def test_paste_background_keeps_the_inputs_pixels_exactly_and_feathers_only_inside_the_edit():
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    edited = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[4:16, 5:25] = True
    out = paste_background(edited, source, mask)
    assert (out[~mask] == source[~mask]).all() and (out[mask] == edited[mask]).all()
    feathered = paste_background(edited, source, mask, feather_px=4)
    assert (feathered[~mask] == source[~mask]).all()  # the kept part is the input's, bit for bit
    assert (feathered[8:12, 9:21] == edited[8:12, 9:21]).all()  # 4 px in: the edit itself
    edge = feathered[4, 10].astype(int)  # on the mask's edge: a quarter of the edit
    assert np.abs(edge - (source[4, 10] + 0.25 * (edited[4, 10].astype(float) - source[4, 10]))).max() <= 1


def test_a_box_whose_far_edge_overflows_a_float_is_clipped_not_a_crash():
    # finite numbers (parse_boxes takes them) whose x + w is inf: clipped to the picture like any box past it
    boxes = parse_boxes([[1e308, 0, 1e308, 5], [2, 1, 1e308, 1e308], [-1e308, -1e308, 1e308, 3]])
    area = editable_area(10, 8, boxes=boxes)
    expected = np.zeros((8, 10), bool)
    expected[1:8, 2:10] = True  # the second box, from (2, 1) to past the picture; the others have no pixel in it
    assert (area == expected).all()


@pytest.mark.parametrize("feather_px", [3, 10**6])
def test_feather_is_the_distance_to_the_kept_part_over_feather_px_whatever_its_size(feather_px):
    """alpha = min(d, F) / F, d the Chebyshev distance to the nearest kept pixel; a feather_px far wider than the
    picture costs no more than one as wide (the config does not bound it)."""
    import time

    rng = np.random.default_rng(4)
    source = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    edited = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    mask = np.ones((10, 12), bool)
    mask[2, 3] = mask[7, 9] = False
    kept = np.argwhere(~mask)
    ys, xs = np.mgrid[0:10, 0:12]
    distance = np.min([np.maximum(abs(ys - y), abs(xs - x)) for y, x in kept], axis=0)
    alpha = np.minimum(distance, feather_px) / feather_px
    expected = np.clip(np.rint(source + alpha[..., None] * (edited.astype(float) - source)), 0, 255)
    started = time.perf_counter()
    out = paste_background(edited, source, mask, feather_px)
    assert time.perf_counter() - started < 5
    assert np.abs(out.astype(int) - expected).max() <= 1 and (out[~mask] == source[~mask]).all()
    whole = paste_background(edited, source, np.ones((10, 12), bool), feather_px)  # nothing kept: the edit
    assert (whole == edited).all()
