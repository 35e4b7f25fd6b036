"""Ray job entrypoint: the same job as `diffedit-batch run`, for `ray job submit` and KubeRay RayJobs.

    ray job submit --working-dir . -- python jobs/edit_manifest.py \
        --config configs/sd21.yaml --input s3://bucket/manifest/ --output s3://bucket/edits/

Under `ray job submit` RAY_ADDRESS is set, so the job joins that cluster instead of starting Ray in-process.
"""

from __future__ import annotations

import sys
from pathlib import Path

# With --working-dir the repository is the job's working directory but not on the driver's import path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffedit_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
