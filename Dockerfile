# syntax=docker/dockerfile:1
#
# celeriac worker image.
#
#   docker build -t celeriac-worker .
#   docker run --rm -e AMQP_ADDR=amqp://guest:guest@host:5672/%2f \
#     -e REDIS_URL=redis://host:6379 -p 9464:9464 celeriac-worker
#
# The image also carries `celeriac` (the CLI: beat, send, submit, status,
# and the operator's commands), which the chart's beat Deployment runs, and
# `celeriac-dlq`, for `kubectl exec` into a pod during an incident.
#
# Build stage: the Rust toolchain builds both binaries in release mode.
# BuildKit cache mounts keep the crate registry and the target directory
# between builds, so a source change downloads nothing and recompiles only
# the workspace crates, not the dependencies.
ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src

# The whole workspace (.dockerignore leaves out target/, .git/, charts/):
# cargo needs every member's manifest to resolve the lock file.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo fetch --locked

RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --offline -p celeriac-consumer --bin celeriac-worker --bin celeriac \
        -p celeriac-dlq --bin celeriac-dlq \
    && install -D -m 0755 target/release/celeriac-worker /out/celeriac-worker \
    && install -D -m 0755 target/release/celeriac /out/celeriac \
    && install -D -m 0755 target/release/celeriac-dlq /out/celeriac-dlq

# Final stage: glibc and libgcc with CA certificates, no shell, no package
# manager; runs as the numeric non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

LABEL org.opencontainers.image.title="celeriac-worker" \
      org.opencontainers.image.description="celeriac worker: runs tasks from RabbitMQ queues" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

COPY --from=build /out/celeriac-worker /out/celeriac /out/celeriac-dlq /usr/local/bin/

USER 65532:65532
ENV CELERIAC_METRICS_ADDR=0.0.0.0:9464 \
    CELERIAC_LOG_FORMAT=json
# /metrics, /healthz, /readyz
EXPOSE 9464

ENTRYPOINT ["/usr/local/bin/celeriac-worker"]
