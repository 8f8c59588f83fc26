# longread gateway image: a build stage makes the wheel, the runtime stage installs it into
# a virtualenv and runs as an unprivileged user. Health: the gRPC health service.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY pyproject.toml README.md ./
COPY server ./server
COPY client/python ./client/python
COPY sandbox ./sandbox
RUN python -m build --wheel --outdir /dist \
 && python -m build --wheel --outdir /dist/sandbox ./sandbox

FROM python:3.11-slim
# true: the vendor emulator too, which the gateway serves from when no vendor is configured
# (compose.yaml sets it for a local stack); by default the image holds the gateway alone.
ARG WITH_SANDBOX=false
RUN useradd --system --uid 10001 --home-dir /app longread
WORKDIR /app
COPY --from=build /dist /tmp/dist
RUN python -m venv /app/venv \
 && /app/venv/bin/pip install --no-cache-dir /tmp/dist/*.whl \
 && if [ "$WITH_SANDBOX" = true ]; then \
      /app/venv/bin/pip install --no-cache-dir /tmp/dist/sandbox/*.whl; fi \
 && rm -rf /tmp/dist
ENV PATH=/app/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LONGREAD_LISTEN=0.0.0.0:50051
USER longread
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["longread", "health", "--target", "127.0.0.1:50051"]
ENTRYPOINT ["longread", "serve"]
