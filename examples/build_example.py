"""Rebuild the bundled example: a few real photographs from scikit-image's sample images and a manifest.

The images and manifest are committed, so the README's example runs offline without scikit-image; this
script documents where they came from. Run: .venv/bin/python examples/build_example.py
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = Path(__file__).parent
# scikit-image sample name -> (file, what it shows); all are public domain or CC0 per skimage.data's docs.
PHOTOS = {
    "astronaut": "astronaut.jpg",  # Eileen Collins, NASA (public domain)
    "coffee": "coffee.jpg",  # a cup of coffee, Rachel Michetti (CC0)
    "chelsea": "chelsea.jpg",  # Chelsea the cat, Stefan van der Walt (CC0)
    "rocket": "rocket.jpg",  # a rocket on its launch pad, SpaceX (CC0)
}

MANIFEST = [
    {"id": "astronaut-robot", "image": "images/astronaut.jpg", "source_prompt": "a photo of an astronaut",
     "target_prompt": "a photo of a robot", "seed": 1},
    {"id": "coffee-tea", "image": "images/coffee.jpg", "source_prompt": "a cup of coffee",
     "target_prompt": "a cup of tea", "inversion_prompt": "a cup of coffee on a saucer on a table"},
    # several edits of one picture share its encode, its inversion and the source half of its mask
    {"id": "chelsea", "image": "images/chelsea.jpg", "source_prompt": "a photo of a cat",
     "target_prompts": ["a photo of a dog", "a photo of a tiger", "a photo of a fox"], "seed": 7},
    {"id": "rocket-balloon", "image": "images/rocket.jpg", "source_prompt": "a rocket on a launch pad",
     "target_prompt": "a hot air balloon on a launch pad"},
    # concepts instead of prompts: Flan-T5 writes captions for each, their mean embedding is the prompt
    {"id": "chelsea-concepts", "image": "images/chelsea.jpg", "source_concept": "cat", "target_concept": "dog"},
    # no source prompt: BLIP captions the picture and the caption guides the inversion and stands in as source
    {"id": "coffee-caption", "image": "images/coffee.jpg", "target_prompt": "a cup of green tea"},
]


def main() -> None:
    import skimage.data

    (HERE / "images").mkdir(exist_ok=True)
    for name, file_name in PHOTOS.items():
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        image.thumbnail((384, 384), Image.Resampling.LANCZOS)
        image.save(HERE / "images" / file_name, quality=88)
    columns = ["id", "image", "source_prompt", "target_prompt", "target_prompts", "inversion_prompt", "seed",
               "source_concept", "target_concept"]
    schema = pa.schema([
        ("id", pa.string()), ("image", pa.string()), ("source_prompt", pa.string()), ("target_prompt", pa.string()),
        ("target_prompts", pa.list_(pa.string())), ("inversion_prompt", pa.string()), ("seed", pa.int64()),
        ("source_concept", pa.string()), ("target_concept", pa.string()),
    ])
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in MANIFEST], schema=schema)
    pq.write_table(table, HERE / "manifest.parquet")
    print(f"wrote {len(MANIFEST)} rows and {len(PHOTOS)} photos under {HERE}")


if __name__ == "__main__":
    main()
