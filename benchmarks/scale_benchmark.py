"""Scale benchmark: a re-run over a large manifest whose rows but the last few are done, and a fresh run with long
prompts, in noop mode.

For each size N it synthesizes N earlier ok records with the project's own writer (in files of
`job.records_per_file` records, as a compacted earlier run leaves them) and a manifest of N + `--new` rows whose
first N are those edits, then re-runs the job (`diffedit-batch run`, job.mode=noop, 64 px, in-process Ray) as a
fresh process and prints:

- the re-run's wall time, Ray's start-up included, and its time before the first edit (the plan pass);
- the peak RSS and USS of the driver and of the largest other process of the run (Ray's GCS and raylet, any
  worker), sampled twice a second over the whole process tree (USS from /proc/<pid>/smaps_rollup at every sample,
  so pool workers that keep their heap after a task count), and how they grow per million rows;
- the record files before and after the run;
- with `--fresh N`, a fresh run (no earlier records) of N rows whose prompts are `--prompt-bytes` long (2 KB):
  what the writers and the end-of-run compaction hold;
- with `--supersede N`, the end-of-run compaction after every other one of N done rows was edited again (their
  earlier records superseded), once with the keys held in one process (as the driver did before) and once removed
  by the run's Ray Data pass grouped by record file;
- with `--s3`, the same re-run against a local S3 server (moto, started here) for the smallest size, and the
  storage requests it answered by kind, per earlier record file.

    .venv/bin/python benchmarks/scale_benchmark.py                          # 10^5 and 10^6 rows
    .venv/bin/python benchmarks/scale_benchmark.py --rows 100000 1000000 10000000 --s3 --json scale.json
    .venv/bin/python benchmarks/scale_benchmark.py --rows --fresh 200000 1000000     # fresh runs, 2 KB prompts
    .venv/bin/python benchmarks/scale_benchmark.py --rows --supersede 1000000 10000000   # compaction after a redo
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
LABEL = "scale benchmark: a noop re-run over N done rows plus new ones"
MANIFEST_FILE_ROWS = 250_000


def synthesize(folder: Path, done: int, new: int, records_per_file: int, output: str, options=None,
               prompt_bytes: int = 0, settings_print: str | None = None, distinct_pictures: bool = False) -> int:
    """The manifest (N + new rows over one small PNG) under `folder`, and N earlier ok records under `output`
    (in the job's result schema and with its writer, `records_per_file` to a file). Returns the number of record
    files. `prompt_bytes`: source and target prompts of about that many characters (each row's own). The records
    carry the request fingerprints the run computes and `settings_print`, so the re-run compares both, and the
    picture's storage identity, so the re-run checks it (job.verify_sources). `distinct_pictures`: each row names a
    picture of its own (a symbolic link to the one PNG), so the check stats every row, not one picture per bucket."""
    import datetime as dt

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from diffedit_batch.data.fingerprints import request_fingerprint
    from diffedit_batch.data.layout import OutputLayout
    from diffedit_batch.data.records import conform_records, parquet_bytes
    from diffedit_batch.data.storage import write_bytes_atomic
    from diffedit_batch.seeds import derive_seed

    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        folder / "images" / "one.png")
    manifest = folder / "manifest"
    manifest.mkdir()
    total = done + new

    def picture(i: int) -> str:
        return f"one-{i:09d}.png" if distinct_pictures else "one.png"

    if distinct_pictures:
        for i in range(total):
            os.symlink("one.png", folder / "images" / picture(i))  # a hard link each would pass ext4's 65,000
    filler = "".join(chr(97 + (k * 7) % 26) for k in range(prompt_bytes))  # long prompts: each row its own
    for start in range(0, total, MANIFEST_FILE_ROWS):
        ids = [f"row-{i:09d}" for i in range(start, min(total, start + MANIFEST_FILE_ROWS))]
        pq.write_table(pa.table({
            "id": ids, "image": [f"../images/{picture(int(i[4:]))}" for i in ids],
            "source_prompt": [f"a photo of a thing {i} {filler}"[:max(prompt_bytes, 18)] if prompt_bytes
                              else "a photo of a thing" for i in ids],
            "target_prompt": [f"a painting of thing {i[-3:]} {filler}"[:max(prompt_bytes, 24)] if prompt_bytes
                              else f"a painting of thing {i[-3:]}" for i in ids],
        }), manifest / f"part-{start // MANIFEST_FILE_ROWS:05d}.parquet")
    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    layout = OutputLayout(output)
    files = 0
    from diffedit_batch.data.sources import source_identity

    identity = source_identity(str(folder / "images" / "one.png"))  # the links share it
    for start in range(0, done, records_per_file):
        ids = [f"row-{i:09d}" for i in range(start, min(done, start + records_per_file))]
        n = len(ids)
        sources = [str(folder / "images" / picture(int(i[4:]))) for i in ids]
        requests = [{"source_image_uri": source, "source_prompt": "a photo of a thing",
                     "target_prompt": f"a painting of thing {i[-3:]}", "seed": derive_seed(0, i)}
                    for i, source in zip(ids, sources)]
        table = conform_records(pa.table({
            "request_fingerprint": [request_fingerprint(request) for request in requests],
            "settings_fingerprint": [settings_print] * n,
            "id": ids, "row_id": ids, "status": ["ok"] * n, "run_id": ["20260101T000000Z-earlier"] * n,
            "image_uri": [f"{output}/images/{i}.png" for i in ids], "mask_uri": [f"{output}/masks/{i}.png" for i in ids],
            "source_image_uri": sources, "source_prompt": ["a photo of a thing"] * n,
            "source_identity": [identity] * n,
            "target_prompt": [f"a painting of thing {i[-3:]}" for i in ids],
            "seed": [derive_seed(0, i) for i in ids], "mask_coverage": [0.0] * n, "model_id": ["models/tiny-sd"] * n,
            "width": [64] * n, "height": [64] * n, "fetch_s": [0.001] * n, "edit_s": [0.001] * n,
            "write_s": [0.002] * n, "background_psnr": [100.0] * n, "background_ssim": [1.0] * n,
            "finished_at": pa.array([when] * n, pa.timestamp("us", tz="UTC")),
        }))
        # the job's own writer: one zstd Parquet file, written atomically, named as the job names its parts
        write_bytes_atomic(layout.record_part(f"earlier-{files:06d}"), parquet_bytes(table), options)
        files += 1
    return files


class PeakRss:
    """Samples the RSS and USS of every process under a root process (the driver); keeps each one's peaks.

    RSS counts the pages of Ray's shared object store that a worker has touched (they are the same physical pages
    in every process); USS is the memory the process alone holds, which still counts the object store's pages that
    no other process maps at the moment (a worker's outputs waiting for the next stage); "own" is USS less those
    pages: the process's own heap.
    """

    def __init__(self, pid: int, interval: float = 0.5, unique_every: int = 4):
        self.pid, self.interval = pid, interval
        self.peaks: dict[int, tuple[float, str]] = {}
        self.unique: dict[int, float] = {}
        self.own: dict[int, float] = {}  # USS outside the object store
        self.unique_names: dict[int, str] = {}  # what the process ran at its USS peak
        # USS of every process at every sample (/proc/<pid>/smaps_rollup, cheap); what of it is the object store's
        # needs the per-mapping /proc/<pid>/smaps, read every few samples only
        self.unique_every = unique_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        samples = 0
        while not self._stop.is_set():
            samples += 1
            try:
                root = psutil.Process(self.pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                processes = []
            for process in processes:
                try:
                    rss = process.memory_info().rss / 2**20
                    if rss > self.peaks.get(process.pid, (0.0, ""))[0]:
                        self.peaks[process.pid] = (rss, " ".join(process.cmdline()[:3])[:80] or process.name())
                    uss = rollup_uss(process.pid)
                    if uss > self.unique.get(process.pid, 0.0):
                        self.unique[process.pid] = uss
                        self.unique_names[process.pid] = " ".join(process.cmdline()[:3])[:80] or process.name()
                    if samples % self.unique_every == 0:
                        _, own = unique_memory(process.pid)
                        self.own[process.pid] = max(self.own.get(process.pid, 0.0), own)
                except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, ProcessLookupError):
                    continue
            time.sleep(self.interval)

    def stop(self) -> dict:
        """The driver's peak RSS and USS, the largest peaks of any other process (and which process: its command)."""
        self._stop.set()
        self._thread.join()
        others = {pid: peak for pid, peak in self.peaks.items() if pid != self.pid}
        other_pid = max(others, key=lambda pid: others[pid][0], default=None)
        other_unique = max((pid for pid in self.unique if pid != self.pid), key=self.unique.get, default=None)
        return {
            "driver_rss_mib": self.peaks.get(self.pid, (0.0, ""))[0],
            "driver_uss_mib": self.unique.get(self.pid, 0.0),
            "other_rss_mib": others[other_pid][0] if other_pid else 0.0,
            "other_process": others[other_pid][1] if other_pid else "",
            "other_uss_mib": max((uss for pid, uss in self.unique.items() if pid != self.pid), default=0.0),
            "other_uss_process": self.unique_names.get(other_unique, "") if other_unique else "",
            "driver_own_mib": self.own.get(self.pid, 0.0),
            "other_own_mib": max((own for pid, own in self.own.items() if pid != self.pid), default=0.0),
            # the largest single process, whichever it is
            "peak_rss_mib": max((rss for rss, _ in self.peaks.values()), default=0.0),
            "peak_uss_mib": max(self.unique.values(), default=0.0),
            # each process's peaks, largest USS first: where the memory is, not only how much
            "processes": sorted(({"command": self.unique_names.get(pid) or self.peaks.get(pid, (0.0, ""))[1],
                                  "rss_mib": self.peaks.get(pid, (0.0, ""))[0], "uss_mib": uss,
                                  "own_mib": self.own.get(pid, 0.0), "driver": pid == self.pid}
                                 for pid, uss in self.unique.items()), key=lambda p: -p["uss_mib"]),
        }


def rollup_uss(pid: int) -> float:
    """USS of a process in MiB: its private pages (clean and dirty), from /proc/<pid>/smaps_rollup."""
    kib = 0
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                kib += int(line.split()[1])
    return kib / 1024


def unique_memory(pid: int) -> tuple[float, float]:
    """(USS, USS outside Ray's object store) of a process in MiB, from /proc/<pid>/smaps. The object store is a
    shared file under /dev/shm (`plasma...`): its private pages are objects only this process maps now."""
    uss = store = 0
    in_store = False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                in_store = "/dev/shm/" in line or "plasma" in line
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                kib = int(line.split()[1])
                uss += kib
                if in_store:
                    store += kib
    return uss / 1024, (uss - store) / 1024


def count_record_files(output: str, options=None) -> int:
    from diffedit_batch.data.records import record_files

    return len(record_files(output, options))


RUN_SETTINGS = ("job.mode=noop", "model.resolution=64", "job.batch_size=32", "job.decode_cpus=0.5",
                "job.write_cpus=0.5", "job.progress_interval_s=3600")


def settings_print(extra: list[str] = ()) -> str:
    """The settings fingerprint the measured run computes for these rows (no concepts, no captions)."""
    from diffedit_batch.config import load_config
    from diffedit_batch.pipeline.context import open_run

    config = load_config(ROOT / "configs" / "tiny.yaml", [*RUN_SETTINGS, *extra])
    return open_run(config, "unused", "unused").settings.by_use[0]


def measured(command: list[str], env: dict[str, str], what: str) -> tuple[str, float, dict]:
    """Run `command` as a fresh process, its process tree's memory sampled: (its output, wall seconds, peaks).
    Raises RuntimeError naming `what` when it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    sampler = PeakRss(process.pid)
    log, _ = process.communicate()
    wall = time.perf_counter() - started
    peaks = sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{what} failed ({process.returncode}):\n{log[-4000:]}")
    return log, wall, peaks


def rerun(folder: Path, output: str, records_per_file: int, env: dict[str, str], extra: list[str]) -> dict:
    """The measured run, as a fresh `diffedit-batch run` process."""
    command = [sys.executable, "-m", "diffedit_batch.cli", "run", "--config", str(ROOT / "configs" / "tiny.yaml"),
               "--input", str(folder / "manifest"), "--output", output]
    for setting in (*RUN_SETTINGS, f"job.records_per_file={records_per_file}", *extra):
        command += ["--set", setting]
    log, wall, peaks = measured(command, env, "the run")
    plan = re.search(r"plan: (\d+) edits to do, (\d+) done earlier.*?, ([\d.]+) s\)", log)
    summary = re.search(r"edits ok (\d+), failed (\d+), duplicates (\d+), skipped (\d+) \(done earlier\), "
                        r"changed (\d+)", log)
    return {"wall_s": wall, "plan_s": float(plan.group(3)), "pending": int(plan.group(1)),
            "ok": int(summary.group(1)), "skipped": int(summary.group(4)), "changed": int(summary.group(5)),
            "unknown_settings": "recorded before fingerprints" in log, **peaks}


def measure_local(rows: int, new: int, records_per_file: int, workdir: Path, extra: list[str] = (),
                  distinct_pictures: bool = False) -> dict:
    """A re-run over `rows` done rows (fingerprints compared) and `new` new ones; `extra`: settings of the run."""
    folder = workdir / f"local-{rows}"
    output = str(folder / "out")
    started = time.perf_counter()
    files = synthesize(folder, rows, new, records_per_file, output, settings_print=settings_print(extra),
                       distinct_pictures=distinct_pictures)
    made = time.perf_counter() - started
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = rerun(folder, output, records_per_file, env, list(extra))
    result.update(rows=rows, new=new, record_files_before=files, record_files_after=count_record_files(output),
                  synthesized_s=made)
    # every done row matched on both fingerprints: nothing changed, nothing made under unknown settings
    assert result["ok"] == new and result["skipped"] == rows and not result["changed"], result
    assert not result["unknown_settings"], result
    shutil.rmtree(folder, ignore_errors=True)
    return result


def measure_fresh(rows: int, prompt_bytes: int, records_per_file: int, workdir: Path, extra: list[str] = ()) -> dict:
    """A fresh run of `rows` rows with long prompts: the writers, the records and the end-of-run compaction."""
    folder = workdir / f"fresh-{rows}"
    output = str(folder / "out")
    synthesize(folder, 0, rows, records_per_file, output, prompt_bytes=prompt_bytes)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = rerun(folder, output, records_per_file, env, list(extra))
    result.update(rows=rows, new=rows, prompt_bytes=prompt_bytes, record_files_after=count_record_files(output),
                  kind="fresh")
    assert result["ok"] == rows, result
    shutil.rmtree(folder, ignore_errors=True)
    return result


SUPERSEDE_CHILD = """
import json, sys, time
import pyarrow as pa, pyarrow.parquet as pq, ray
from diffedit_batch.data.compaction import compact_records
from diffedit_batch.pipeline.supersede import remove_superseded
output, records_per_file, mode, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
ray.init(logging_level="ERROR", include_dashboard=False)
started = time.perf_counter()
superseded = (remove_superseded(files, None) if mode == "distributed"
              else pa.concat_tables([pq.read_table(f) for f in files]))  # what the driver held before
result = compact_records(output, records_per_file=records_per_file, superseded=superseded, run_id="bench")
print(json.dumps({"compaction_s": time.perf_counter() - started, "superseded": result.superseded,
                  "rewritten": result.rewritten, "files_after": result.files_after}))
"""


def measure_supersede(rows: int, records_per_file: int, workdir: Path, mode: str) -> dict:
    """The end-of-run compaction after a re-run that edited every other one of `rows` done rows again: their
    earlier records superseded, named in plan files of ~50,000 keys spread over the record files by row id (as the
    plan's buckets write them). `mode`: distributed (the run's Ray Data pass) or local (every key in one process,
    as the driver held them before). Measured as its own process with an in-process Ray."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from diffedit_batch.data.compaction import SUPERSEDED_SCHEMA
    from diffedit_batch.data.records import record_files
    from diffedit_batch.data.worklist import bucket_of
    from diffedit_batch.pipeline.planning import bucket_count

    folder = workdir / f"supersede-{mode}-{rows}"
    output = str(folder / "out")
    synthesize(folder, rows, 0, records_per_file, output, settings_print="earlier")
    names = [file.name for file in record_files(output)]  # earlier-000000, ...: file k holds rows k * per file, ...
    buckets = bucket_count(rows, rows)
    keys: list[list[tuple[str, str]]] = [[] for _ in range(buckets)]
    for i in range(0, rows, 2):
        row_id = f"row-{i:09d}"
        keys[bucket_of(row_id, buckets)].append((names[i // records_per_file], row_id))
    (folder / "plan").mkdir()
    files = []
    for bucket, pairs in enumerate(keys):
        path = folder / "plan" / f"superseded-{bucket:05d}.parquet"
        pq.write_table(pa.table({"file": [f for f, _ in pairs], "id": [i for _, i in pairs],
                                 "status": ["ok"] * len(pairs)}, schema=SUPERSEDED_SCHEMA), path)
        files.append(str(path))
    del keys
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log, wall, peaks = measured([sys.executable, "-c", SUPERSEDE_CHILD, output, str(records_per_file), mode, *files],
                                env, "the compaction")
    result = {**json.loads(log.strip().splitlines()[-1]), "wall_s": wall, "rows": rows, "kind": f"supersede-{mode}",
              **peaks}
    assert result["superseded"] == (rows + 1) // 2, result
    shutil.rmtree(folder, ignore_errors=True)
    return result


def _peaks(result: dict) -> str:
    return (f"driver peak {result['driver_rss_mib']:.0f} MiB RSS / {result['driver_uss_mib']:.0f} MiB USS "
            f"({result['driver_own_mib']:.0f} outside the object store); largest other process "
            f"{result['other_rss_mib']:.0f} MiB RSS ({result['other_process'].strip()}), largest other USS "
            f"{result['other_uss_mib']:.0f} MiB ({result['other_uss_process'].strip()}; largest outside the object "
            f"store {result['other_own_mib']:.0f} MiB)")


def _top_processes(result: dict, count: int = 4) -> str:
    """The processes of largest USS, with what each ran: where the memory is."""
    return "; ".join(f"{p['command'].strip() or '?'}: {p['uss_mib']:.0f} USS ({p['own_mib']:.0f} own), "
                     f"{p['rss_mib']:.0f} RSS" for p in result.get("processes", [])[:count])


def _slope(small: dict, large: dict, name: str) -> float:
    """MiB per million rows between two sizes."""
    return (large[name] - small[name]) / ((large["rows"] - small["rows"]) / 1e6)


def measure_s3(rows: int, new: int, records_per_file: int, workdir: Path) -> dict:
    """The same re-run with the output on a local S3 server (moto, in this process): requests counted."""
    from moto.server import ThreadedMotoServer

    from diffedit_batch.data.storage import StorageOptions

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "AWS_PROFILE", "AWS_ENDPOINT_URL")}
    env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true")
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    requests: list[tuple[str, str, str]] = []
    app = server._server.app

    def counting(environ, start_response):
        requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", "")))
        return app(environ, start_response)

    server._server.app = counting
    try:
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        options = StorageOptions(s3_endpoint_url=endpoint, s3_region="us-east-1")
        folder = workdir / f"s3-{rows}"
        output = "s3://bench/out"
        files = synthesize(folder, rows, new, records_per_file, output, options, settings_print=settings_print())
        requests.clear()
        result = rerun(folder, output, records_per_file, env,
                       [f"storage.s3_endpoint_url={endpoint}", "storage.s3_region=us-east-1"])
        kinds = Counter(_kind(method, query) for method, _, query in requests)
        # What resuming costs: the requests that touched the earlier record files, and the listings of manifest/
        resume = Counter(method for method, path, _ in requests if "/manifest/part-earlier-" in path)
        listings = sum(1 for method, path, query in requests
                       if _kind(method, query) == "LIST" and "prefix=out%2Fmanifest" in query.replace("/", "%2F"))
        result.update(rows=rows, new=new, record_files_before=files, requests=dict(kinds),
                      resume_requests=dict(resume), manifest_listings=listings,
                      record_files_after=count_record_files(output, options))
        shutil.rmtree(folder, ignore_errors=True)
        return result
    finally:
        server.stop()


def _kind(method: str, query: str) -> str:
    if method == "GET" and "list-type" in query:
        return "LIST"
    return method


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=LABEL)
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000], help="done rows N of re-runs")
    parser.add_argument("--new", type=int, default=1000, help="rows not done yet")
    parser.add_argument("--fresh", type=int, nargs="*", default=[], help="rows of fresh runs with long prompts")
    parser.add_argument("--prompt-bytes", type=int, default=2048, help="prompt length of the fresh runs")
    parser.add_argument("--supersede", type=int, nargs="*", default=[],
                        help="done rows N of a compaction after every other one was edited again")
    parser.add_argument("--records-per-file", type=int, default=10_000)
    parser.add_argument("--s3", action="store_true", help="also re-run the smallest size against a local S3 server")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the measured runs (re-runs and fresh runs), as `run --set`; repeatable")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--distinct-pictures", action="store_true",
                        help="each row of the re-runs names a picture of its own (symbolic links), so the re-run's check "
                             "of the pictures (job.verify_sources) stats every row")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    print(LABEL)
    print(f"{os.cpu_count()} CPUs; each run a fresh `diffedit-batch run` process with an in-process Ray; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    figures = []
    with tempfile.TemporaryDirectory(prefix="scale-") as workdir:
        for rows in args.rows:
            result = measure_local(rows, args.new, args.records_per_file, Path(workdir), args.settings,
                                   args.distinct_pictures)
            figures.append(result)
            print(f"{rows:>9} done + {args.new} new rows: re-run {result['wall_s']:6.1f} s (plan {result['plan_s']:.1f} s "
                  f"before the first edit); {_peaks(result)}; record files {result['record_files_before']} -> "
                  f"{result['record_files_after']}", flush=True)
            print(f"    largest USS: {_top_processes(result)}", flush=True)
        for rows in args.fresh:
            result = measure_fresh(rows, args.prompt_bytes, args.records_per_file, Path(workdir), args.settings)
            figures.append(result)
            print(f"{rows:>9} fresh rows, {args.prompt_bytes} B prompts: run {result['wall_s']:6.1f} s; "
                  f"{_peaks(result)}; record files -> {result['record_files_after']}", flush=True)
            print(f"    largest USS: {_top_processes(result)}", flush=True)
        for rows in args.supersede:
            for mode in ("local", "distributed"):
                result = measure_supersede(rows, args.records_per_file, Path(workdir), mode)
                figures.append(result)
                print(f"{rows:>9} done rows, every other one superseded, removed {mode}ly: compaction "
                      f"{result['compaction_s']:6.1f} s ({result['wall_s']:.1f} s with Ray's start); {_peaks(result)}; "
                      f"{result['rewritten']} files rewritten", flush=True)
        if args.s3 and args.rows:
            rows = min(args.rows)
            result = measure_s3(rows, args.new, args.records_per_file, Path(workdir))
            result["storage"] = "s3"
            figures.append(result)
            files = result["record_files_before"]
            per_file = {kind: count / files for kind, count in result["resume_requests"].items()}
            print(f"{rows:>9} done + {args.new} new rows on S3: re-run {result['wall_s']:.1f} s (plan "
                  f"{result['plan_s']:.1f} s); all requests {result['requests']}; on the {files} earlier record "
                  "files: " + ", ".join(f"{kind} {value:.2f}" for kind, value in sorted(per_file.items()))
                  + f" per file, and {result['manifest_listings']} listings of manifest/; record files -> "
                  f"{result['record_files_after']}", flush=True)
    for kind, label in (("rerun", "re-runs"), ("fresh", "fresh runs")):
        runs = [r for r in figures if "storage" not in r and r.get("kind", "rerun") == kind]
        if len(runs) < 2:
            continue
        small, large = runs[0], runs[-1]
        print(f"{label}: from {small['rows']} to {large['rows']} rows the largest process grows "
              f"{large['peak_rss_mib'] - small['peak_rss_mib']:+.0f} MiB RSS "
              f"({large['peak_uss_mib'] - small['peak_uss_mib']:+.0f} MiB USS), the driver "
              f"{large['driver_rss_mib'] - small['driver_rss_mib']:+.0f} MiB RSS: slopes "
              f"{_slope(small, large, 'driver_rss_mib'):.1f} MiB (driver RSS), "
              f"{_slope(small, large, 'peak_uss_mib'):.1f} MiB (largest USS) per million rows; time grows "
              f"{large['wall_s'] / small['wall_s']:.1f}x for {large['rows'] / small['rows']:.0f}x the rows")
        if kind == "rerun":
            from diffedit_batch.pipeline.planning import bucket_count

            rate = (large["wall_s"] - small["wall_s"]) / (large["rows"] - small["rows"])
            print(f"extrapolated to 10^8 rows at this machine's rate (two cores): about {rate * 1e8 / 60:.0f} "
                  f"minutes ({bucket_count(10**8, 10**8)} plan buckets of about the same rows each); driver RSS "
                  f"about {large['driver_rss_mib'] + _slope(small, large, 'driver_rss_mib') * (100 - large['rows'] / 1e6):.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"label": LABEL, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
