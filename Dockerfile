# The image every pod of the KubeRay examples (jobs/*.yaml) runs: this repository at /app, installed on Ray's
# CUDA image. Build and push it, then name it in the examples:
#
#   docker build -t REGISTRY/diffedit-batch:TAG .
#   docker push REGISTRY/diffedit-batch:TAG
#
# Ray comes from the base image, never from pip: head, workers and the examples' rayVersion must agree, so a new
# Ray means a new tag here and in jobs/*.yaml (tests/cluster/test_kuberay.py checks both against pyproject).
FROM rayproject/ray:2.60.0-py311-cu128

# Ray's image has no torch. The default is a build for the base image's CUDA (12.8); a base image that already has
# torch keeps its own, as scripts/setup does. Another CUDA or a mirror:
#   --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

# Model weights are fetched at run time into HF_HOME, never baked in: the RayJob mounts a volume here on GPU pods.
ENV HF_HOME=/cache/huggingface
USER root
RUN mkdir -p /app "$HF_HOME" && chown ray /app "$HF_HOME"
USER ray
WORKDIR /app

# Slowest-changing layers first: torch, then the dependencies read from pyproject alone, so a source change
# rebuilds only the last two layers. TORCH_SPEC is left unquoted: it may carry pip options.
# hadolint ignore=SC2086
RUN python -c "import torch" 2>/dev/null || pip install --no-cache-dir ${TORCH_SPEC}
COPY --chown=ray pyproject.toml /app/
RUN python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
        print('\n'.join(project['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The repository itself (.dockerignore keeps out the venv, git history, tests and any weights). jobs/kuberay-*.yaml
# run python /app/jobs/edit_manifest.py with workingDir /app.
COPY --chown=ray . /app
RUN pip install --no-cache-dir /app && rm -rf /app/build
