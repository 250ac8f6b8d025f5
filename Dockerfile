# cs-repro: the paper pipeline (ResNet-20 and VGG-16 on CIFAR-10) in a container. Usage: docker/README.md.
#
# Base image, pinned by tag: nvidia/cuda's "base" flavour on Ubuntu 22.04.
# - Python: pyproject.toml requires >=3.11,<3.12. Ubuntu 22.04 ships python3.11 (24.04 only has 3.12), and we
#   install our own pins into a venv, so the image runs exactly the versions the README's set-up installs.
# - CUDA: the pinned torch==2.14.1 wheel from PyPI is a CUDA 13.0 build that brings its own CUDA runtime,
#   cuBLAS and cuDNN as pip wheels, so a -cudnn-runtime base would only add an unused second copy (GBs).
#   What the base contributes is the NVIDIA container settings (NVIDIA_VISIBLE_DEVICES,
#   NVIDIA_DRIVER_CAPABILITIES) and NVIDIA_REQUIRE_CUDA=cuda>=13.0, so `docker run --gpus all` on a host
#   whose driver is too old for the wheel stops with a clear message instead of silently using the CPU.
# - pytorch/pytorch images are not used: their torch and conda Python are theirs, and pip would replace
#   that torch with the pinned one anyway.
# The base is a build argument so that the tests can build the image where no registry is reachable, on a
# stand-in made locally from Debian's packages (tests/test_docker_image.py); its default is the image above.
ARG BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu22.04
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
# g++, python3.11-dev: the fused CPU soft-mask kernel (cs_repro.kernels) is compiled on first use.
# git: DVC experiments need a git repository. dataset-fashion-mnist: the quick profile's data, read from
# /usr/share/datasets like on Debian, so `docker run cs-repro quick` works offline.
# safe.directory: a mounted host folder owned by another uid must still be usable as a git repository.
# user.name/email: DVC experiments commit to git, and those commits need an author.
# DL3008 (pin apt versions) is ignored on purpose: the base tag pins the Ubuntu release, and Ubuntu does not
# keep superseded package versions in its archive, so pinned versions would break the build after an update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates git python3.11 python3.11-venv python3.11-dev g++ dataset-fashion-mnist tini \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && git config --system --add safe.directory '*' \
    && git config --system user.name "cs-repro container" \
    && git config --system user.email "cs-repro@localhost" \
    && useradd --create-home --uid 1000 --shell /bin/bash cs \
    && mkdir -p /work/out \
    && chown cs:cs /work/out

ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    APP_DIR=/opt/cs-repro \
    OUT_DIR=/work/out

WORKDIR /opt/cs-repro

# Dependencies first, from pyproject.toml alone (its pins, no second list), so editing the code does not
# reinstall torch: an editable install of a placeholder package, whose sources the next COPY fills in.
COPY pyproject.toml ./
RUN mkdir -p src/cs_repro \
    && touch src/cs_repro/__init__.py \
    && pip install --no-cache-dir -e .

# The repository. .git is not in the build context (.dockerignore): the image makes its own one-commit
# repository of exactly what it contains, so it never depends on the host's git layout (worktrees,
# submodules, history size) and `dvc exp run` always has the commit it needs as its baseline.
COPY . .
RUN python -m compileall -q src \
    && git init -q -b main \
    && git add -A \
    && git commit -q -m "cs-repro image build"

# The project's commit the image is built from (`make image` passes it): results name it, not the image's
# own one-commit repository, which exists nowhere else. CS_REPRO_IN_CONTAINER: the entry point checks the
# volume and words its advice for `docker run`.
ARG CS_REPRO_COMMIT=unknown
ENV CS_REPRO_COMMIT=${CS_REPRO_COMMIT} \
    CS_REPRO_IN_CONTAINER=1

# Outputs (workspace with runs/metrics/figures, DVC cache, checkpoints, downloads) belong on the host:
# -v "$PWD/out:/work/out", so a second `docker run` resumes and reuses the cache. No VOLUME instruction: an
# anonymous volume would hide a missing -v, which the entry point instead warns about before the run.
# uid of the user "cs" made above (numeric, so the host and runtimes can check it is not root)
USER 1000:1000
# tini as PID 1 (a plain PID 1 ignores SIGTERM, so `docker stop` would end in SIGKILL); -g sends the signal to
# the whole process group: dvc and the running stage both stop, the stage keeping its finished epochs.
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/opt/cs-repro/docker/entrypoint.sh"]
CMD ["paper"]
