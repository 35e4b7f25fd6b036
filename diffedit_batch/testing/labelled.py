"""Small labelled inputs for tests and benchmarks: a Hugging Face ``datasets`` Parquet file, WebDataset shards and an
ImageFolder tree, each of a few coloured pictures with prompts and a class label."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

CLASSES = ("cat", "dog", "fox")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")


def picture(colour: str, size: tuple[int, int] = (48, 32), fmt: str = "PNG") -> bytes:
    """An encoded picture of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def labelled_rows(n: int) -> list[dict]:
    """`n` rows: a picture's bytes, a class index (cycling through CLASSES), prompts that name the class."""
    rows = []
    for i in range(n):
        label = i % len(CLASSES)
        rows.append({"image": picture(COLOURS[i % len(COLOURS)]), "label": label,
                     "source_prompt": f"a photo of a {CLASSES[label]}",
                     "target_prompt": f"a photo of a {CLASSES[label]} in the snow", "caption": f"picture {i}"})
    return rows


def write_hf_parquet(path: Path, rows: list[dict], names=CLASSES) -> Path:
    """`rows` as ``datasets`` writes them: Image and ClassLabel features, ``to_parquet`` (no id column)."""
    import datasets

    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=list(names)),
        "source_prompt": datasets.Value("string"), "target_prompt": datasets.Value("string"),
        "caption": datasets.Value("string"),
    })
    data = {name: [row[name] for row in rows] for name in features}
    data["image"] = [{"bytes": row["image"], "path": None} for row in rows]
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(path))
    return path


def write_shard(path: Path, samples: list[dict[str, bytes]]) -> Path:
    """A tar of `samples` (member name -> bytes each), members in the order given."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for name, data in sample.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def wds_sample(key: str, i: int, label: int | None = None, image: bool = True, **fields) -> dict[str, bytes]:
    """A WebDataset sample as img2dataset writes one: ``.jpg``, ``.json`` (prompts and `fields`), ``.txt``, ``.cls``."""
    meta = {"source_prompt": "a photo of a thing", "target_prompt": "a photo of a thing in the snow", **fields}
    sample = {}
    if image:
        sample[f"{key}.jpg"] = picture(COLOURS[i % len(COLOURS)], fmt="JPEG")
    sample[f"{key}.json"] = json.dumps(meta).encode()
    sample[f"{key}.txt"] = f"caption {i}".encode()
    if label is not None:
        sample[f"{key}.cls"] = str(label).encode()
    return sample
