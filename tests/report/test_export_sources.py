"""The export's source pictures as training readers see them: upright, as the edits are (issue 27)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from diffedit_batch.data.export import export_dataset
from diffedit_batch.data.records import write_record_part


def _rotated_jpeg(path) -> np.ndarray:
    """An 80x48 JPEG whose EXIF says 'rotate 90 degrees on display'; returns the pixels upright (48x80)."""
    pixels = np.zeros((48, 80, 3), np.uint8)
    pixels[:, :40] = (250, 20, 20)  # red left half, blue right half: a rotation cannot hide
    pixels[:, 40:] = (20, 20, 250)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    with Image.open(path) as stored:
        from PIL import ImageOps

        return np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))


def test_an_exif_rotated_source_is_exported_upright_in_both_formats(tmp_path):
    upright = _rotated_jpeg(tmp_path / "rotated.jpg")
    assert upright.shape == (80, 48, 3)
    Image.fromarray(np.zeros((80, 48, 3), np.uint8)).save(tmp_path / "edit.png")
    Image.new("L", (48, 80)).save(tmp_path / "mask.png")
    Image.new("RGB", (16, 8), (1, 2, 3)).save(tmp_path / "plain.png")
    base = {"row_id": "r", "status": "ok", "run_id": "r1", "image_uri": str(tmp_path / "edit.png"),
            "mask_uri": str(tmp_path / "mask.png"), "target_prompt": "a dog"}
    write_record_part(str(tmp_path / "job"), [
        {**base, "id": "rotated", "source_image_uri": str(tmp_path / "rotated.jpg")},
        {**base, "id": "plain", "row_id": "p", "source_image_uri": str(tmp_path / "plain.png")},
    ], part_name="r1-0")

    result = export_dataset(str(tmp_path / "job"), str(tmp_path / "export"))
    rows = {row["id"]: row for row in pq.read_table(result.parts[0]).to_pylist()}
    stored = rows["rotated"]["source_image"]
    with Image.open(io.BytesIO(stored["bytes"])) as image:
        assert image.size == (48, 80) and image.getexif().get(0x0112) in (None, 1)
        assert np.abs(np.asarray(image.convert("RGB"), int) - upright).max() <= 2
    assert stored["path"] == "rotated.png"
    # A picture with nothing to rotate keeps its own bytes.
    assert rows["plain"]["source_image"]["bytes"] == (tmp_path / "plain.png").read_bytes()

    pix2pix = export_dataset(str(tmp_path / "job"), str(tmp_path / "pix2pix"), export_format="instruct-pix2pix")
    [row] = [r for r in pq.read_table(pix2pix.parts[0]).to_pylist() if r["input_image"]["path"] == "rotated.png"]
    with Image.open(io.BytesIO(row["input_image"]["bytes"])) as image:
        assert image.size == (48, 80)
