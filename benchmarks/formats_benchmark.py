"""Storage cost of each output format: objects written and PUT requests per 10,000 edits, on a local S3 server.

For each format (files, webdataset, parquet) it runs the job in noop mode (64 px, in-process Ray) on a manifest of
`--edits` rows over a few small PNGs, with the output on a local S3 server (moto, started here and counting every
request), and prints the objects under the output prefix and the requests by kind, scaled to 10,000 edits.

    .venv/bin/python benchmarks/formats_benchmark.py [--edits 2000] [--shard-rows 1000] [--json formats.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_benchmark import _free_port, _kind  # noqa: E402

LABEL = "storage objects and requests per 10,000 edits, by output format (noop mode, local S3 server)"


def make_manifest(folder: Path, edits: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(16):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "images" / f"{k}.png")
    pq.write_table(pa.table({
        "id": [f"row-{i:07d}" for i in range(edits)], "image": [f"images/{i % 16}.png" for i in range(edits)],
        "source_prompt": ["a photo"] * edits, "target_prompt": [f"a painting {i % 97}" for i in range(edits)],
    }), folder / "manifest.parquet")
    return folder / "manifest.parquet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=LABEL)
    parser.add_argument("--edits", type=int, default=2000)
    parser.add_argument("--shard-rows", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import boto3
    from moto.server import ThreadedMotoServer

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "AWS_PROFILE", "AWS_ENDPOINT_URL")}
    env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true")
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    requests: list[tuple[str, str, str]] = []
    app = server._server.app

    def counting(environ, start_response):
        requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", "")))
        return app(environ, start_response)

    server._server.app = counting
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="bench")
    print(LABEL)
    figures = []
    try:
        with tempfile.TemporaryDirectory(prefix="formats-") as workdir:
            manifest = make_manifest(Path(workdir), args.edits)
            for output_format in ("files", "webdataset", "parquet"):
                prefix = f"out-{output_format}"
                command = [sys.executable, "-m", "diffedit_batch.cli", "run", "--config",
                           str(ROOT / "configs" / "tiny.yaml"), "--input", str(manifest), "--output",
                           f"s3://bench/{prefix}"]
                for setting in ("job.mode=noop", "model.resolution=64", "job.batch_size=32", "job.decode_cpus=0.5",
                                "job.write_cpus=0.5", "job.progress_interval_s=3600", f"output.format={output_format}",
                                f"output.shard_rows={args.shard_rows}", f"storage.s3_endpoint_url={endpoint}",
                                "storage.s3_region=us-east-1"):
                    command += ["--set", setting]
                requests.clear()
                done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
                if done.returncode != 0:
                    raise RuntimeError(done.stderr[-3000:])
                ours = [r for r in requests if r[1].startswith(f"/bench/{prefix}") or f"prefix={prefix}" in r[2]]
                kinds = Counter(_kind(method, query) for method, _, query in ours)
                objects = Counter()
                for page in client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=f"{prefix}/"):
                    for item in page.get("Contents", []):
                        objects[item["Key"].split("/")[1]] += 1
                scale = 10_000 / args.edits
                figure = {"format": output_format, "edits": args.edits, "objects": dict(objects),
                          "requests": dict(kinds),
                          "objects_per_10k": sum(objects.values()) * scale, "puts_per_10k": kinds["PUT"] * scale}
                figures.append(figure)
                print(f"{output_format:>10}: {sum(objects.values())} objects ({dict(objects)}) and "
                      f"{kinds['PUT']} PUTs for {args.edits} edits -> {figure['objects_per_10k']:.0f} objects and "
                      f"{figure['puts_per_10k']:.0f} PUT requests per 10,000 edits; all requests {dict(kinds)}",
                      flush=True)
    finally:
        server.stop()
    if args.json:
        args.json.write_text(json.dumps({"label": LABEL, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
