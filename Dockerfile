# longread gateway image: a build stage makes the wheels, the runtime stage installs the locked
# dependencies (requirements.lock, hashes checked) and the wheel into a virtualenv and runs as an
# unprivileged user. Health: the gRPC health service. `make image-check` runs these steps
# without a container runtime (deploy/image/check_build.py); `make image` builds the image.
#
# The base is pinned by digest, the multi-platform index's, so a re-pushed tag changes nothing
# until the pin is bumped. To bump: read the index digest of the tag, e.g.
#   docker buildx imagetools inspect python:3.11-slim     (the "Digest:" line)
#   crane digest python:3.11-slim
# put it in PYTHON_DIGEST, then run `make image-check` and `make image`.
ARG PYTHON_IMAGE=python:3.11-slim
ARG PYTHON_DIGEST=sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE}@${PYTHON_DIGEST} AS build
WORKDIR /src
# The build tools pinned too, and no isolated build env: nothing unpinned is fetched.
RUN pip install --no-cache-dir build==1.2.2 setuptools==80.9.0
COPY pyproject.toml README.md ./
COPY server ./server
COPY client/python ./client/python
COPY sandbox ./sandbox
# The gateway's wheel and the Python client's it depends on (its own distribution), side by side.
RUN python -m build --no-isolation --wheel --outdir /dist ./client/python \
 && python -m build --no-isolation --wheel --outdir /dist . \
 && python -m build --no-isolation --wheel --outdir /dist/sandbox ./sandbox

FROM ${PYTHON_IMAGE}@${PYTHON_DIGEST}
ARG PYTHON_IMAGE
ARG PYTHON_DIGEST
# true: the vendor emulator too, which the gateway serves from when no vendor is configured
# (compose.yaml sets it for a local stack); by default the image holds the gateway alone.
ARG WITH_SANDBOX=false
# The version is pyproject.toml's (`make image-check` fails when they differ); `make image` passes the
# commit and the time.
ARG VERSION=0.1.0
ARG REVISION=""
ARG CREATED=""
LABEL org.opencontainers.image.title="longread" \
      org.opencontainers.image.description="A gRPC gateway that has long documents analysed by LLMs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/longread-dev/longread" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/${PYTHON_IMAGE}" \
      org.opencontainers.image.base.digest="${PYTHON_DIGEST}"
# A fixed uid and gid, so Kubernetes' runAsUser/fsGroup (deploy/helm) can name them.
RUN groupadd --system --gid 10001 longread \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home longread
WORKDIR /app
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /dist /tmp/dist
# The dependencies exactly as locked (every file's hash checked; the gateway's otlp and
# prometheus extras included), then the wheels without dependencies of their own, then pip's
# check that the set is complete.
RUN python -m venv /app/venv \
 && /app/venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.lock \
 && /app/venv/bin/pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
 && if [ "$WITH_SANDBOX" = true ]; then \
      /app/venv/bin/pip install --no-cache-dir --no-deps /tmp/dist/sandbox/*.whl; fi \
 && /app/venv/bin/pip check \
 && rm -rf /tmp/dist /tmp/requirements.lock
# Metrics on every interface: a scraper reaches the container from outside (the setting's own
# default is loopback, for a gateway run on a host). pip compiled the bytecode at install time,
# so nothing is written under a read-only root filesystem.
ENV PATH=/app/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LONGREAD_LISTEN=0.0.0.0:50051 \
    LONGREAD_TELEMETRY__PROMETHEUS_HOST=0.0.0.0
USER 10001:10001
# 8081: Connect and gRPC-Web, when http.listen (LONGREAD_HTTP__LISTEN) is set.
EXPOSE 50051 8081 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["longread", "health", "--target", "127.0.0.1:50051"]
ENTRYPOINT ["longread", "serve"]
