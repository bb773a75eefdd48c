# syntax=docker/dockerfile:1
# One image for every Streamer process: `streamer connect | router | processor | operator`
# and `streamer handler examples`. Build:  docker build -t streamer:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with Streamer and its pinned dependencies ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/streamer
ENV PATH=/opt/streamer/bin:$PATH
# Dependencies first (constraints.txt pins them), so code changes reuse this layer; the
# services need the `server` extra (the base install is only the client).
COPY pyproject.toml constraints.txt README.md ./
COPY streamer/__init__.py streamer/__init__.py
RUN pip install --no-cache-dir -c constraints.txt '.[server]' \
    && pip uninstall --yes streamer
COPY streamer ./streamer
COPY services ./services
COPY operator ./operator
COPY examples ./examples
COPY proto ./proto
RUN pip install --no-cache-dir --no-deps -c constraints.txt '.[server]' \
    && python -m compileall -q /opt/streamer/lib \
    && streamer --help > /dev/null

# --- runtime: the virtualenv on a clean base, as an unprivileged user --------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/streamer/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 streamer \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin streamer
COPY --from=build /opt/streamer /opt/streamer
# Numeric, so Kubernetes can verify runAsNonRoot; the root filesystem may be read-only
# (the chart mounts an emptyDir at /tmp).
USER 10001:10001
WORKDIR /opt/streamer
# connect WebSocket, connect/router/handler gRPC, /metrics /healthz /readyz
EXPOSE 8080 50051 50052 50061 9090
ENTRYPOINT ["streamer"]
CMD ["connect"]
