# syntax=docker/dockerfile:1
# The heapsnap operator image. Build and publish from the repository root:
#   docker build -t REGISTRY/heapsnap-operator:0.1.0 . && docker push REGISTRY/heapsnap-operator:0.1.0
# The "build" stage turns the source into a wheel and installs it, with the hash-pinned
# dependencies of requirements.lock, into a virtualenv; the final stage copies only that
# virtualenv onto a fresh slim base: no pip, build tools, caches or source tree ship.
# The build stage's base is the full image of the same Python release: its gcc compiles
# heapsnap's one C extension (the snapshot's integer parser). Keep the two tags in step.
# tests/chart/test_image.py runs this stage's RUN lines, unchanged, into a clean virtualenv.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG BUILD_IMAGE=python:3.11-bookworm

FROM ${BUILD_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ONLY_BINARY=:all: \
    BUILD_VENV=/opt/build \
    VIRTUAL_ENV=/opt/heapsnap
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when a lock file changes.
# The runtime virtualenv gets no pip of its own; the build virtualenv's pip installs into it.
COPY requirements.lock requirements-build.lock ./
RUN python -m venv "$BUILD_VENV" \
 && "$BUILD_VENV/bin/python" -m pip install --require-hashes --no-deps -r requirements-build.lock \
 && python -m venv --without-pip "$VIRTUAL_ENV" \
 && "$BUILD_VENV/bin/pip" --python "$VIRTUAL_ENV/bin/python" install --compile --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml setup.py README.md ./
COPY operator/heapsnap ./operator/heapsnap
# pip check proves the lock holds the wheel's whole dependency closure (it was installed --no-deps);
# the import proves the C extension was built (setup.py lets an install without gcc go on).
RUN "$BUILD_VENV/bin/pip" wheel --no-deps --no-build-isolation --wheel-dir dist . \
 && "$BUILD_VENV/bin/pip" --python "$VIRTUAL_ENV/bin/python" install --compile --no-deps --no-index dist/heapsnap-*.whl \
 && "$BUILD_VENV/bin/pip" --python "$VIRTUAL_ENV/bin/python" check \
 && "$VIRTUAL_ENV/bin/python" -c "import heapsnap.analysis._cints"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="heapsnap-operator" \
      org.opencontainers.image.description="Kubernetes operator that takes V8 heap snapshots of Node.js processes in pods" \
      org.opencontainers.image.licenses="Apache-2.0"
# The root filesystem is read-only at run time (the chart sets readOnlyRootFilesystem):
# bytecode was compiled at build time, and HOME and TMPDIR point at /tmp, an emptyDir.
ENV PATH=/opt/heapsnap/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
COPY --from=build /opt/heapsnap /opt/heapsnap
# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd entry.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["heapsnap-operator"]
