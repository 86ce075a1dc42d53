# syntax=docker/dockerfile:1
#
# Two images from one build:
#
#   docker build -t telemetry-collector .                         the daemon alone (default)
#   docker build --target tools -t telemetry-collector-tools .    sensor-fleet and stream-reader
#
#   docker run --rm -e AWS_REGION=eu-west-1 ... telemetry-collector
#   docker run --rm ... telemetry-collector-tools sensor-fleet send --rate 10
#
# GIT_COMMIT (build argument) names the commit in `--version` and collector_build_info; the
# build context has no .git, so without it they say `unknown`.

# cargo-chef splits the build in two layers: the dependencies, which change when a Cargo.toml or
# Cargo.lock change, and the workspace's own code. Editing src/ then rebuilds only the second.
FROM rust:1.95-slim-bookworm AS chef
# make: jemalloc, the collector's allocator, is built from C with its own configure and make.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install --locked cargo-chef --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY . .
# The recipe lists every crate of the workspace with its manifest and targets, no source code.
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
ARG GIT_COMMIT=""
# The collector's crate alone: the production image's one binary.
RUN cargo build --release --locked -p telemetry-collector \
 && install -D -m 0755 target/release/telemetry-collector /out/telemetry-collector

# The fleet tools' crate (crates/fleet), for the tools image only.
FROM builder AS tools-builder
RUN cargo build --release --locked -p telemetry-fleet --bins \
 && mkdir -p /out-tools \
 && find target/release -maxdepth 1 -type f -perm -u+x ! -name telemetry-collector \
      -exec install -m 0755 -t /out-tools {} + \
 && test -x /out-tools/sensor-fleet && test -x /out-tools/stream-reader

FROM debian:bookworm-slim AS runtime
# ca-certificates: rustls verifies AWS endpoints against the system roots (the production image
# takes its bundle from here).
# Versions follow the bookworm security updates rather than a pin that would stop resolving.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin collector

# The simulator and the stream reader, for demos, load and checks; never deployed beside the daemon.
FROM runtime AS tools
COPY --from=tools-builder /out-tools/ /usr/local/bin/
USER 10001:10001
CMD ["sensor-fleet", "--help"]

# The production image's files: the daemon, exactly the shared libraries it loads (at their
# paths), and the CA roots; no shell, no package manager, nothing else to patch or to exploit.
FROM builder AS rootfs
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=runtime /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt
RUN install -D -m 0755 /out/telemetry-collector /rootfs/usr/local/bin/telemetry-collector \
 && ldd /out/telemetry-collector | grep -oE '/[^ ]+' | sort -u \
    | xargs -I{} cp --parents -L {} /rootfs/ \
 && test -n "$(ls /rootfs/lib* 2>/dev/null)"

# The production image (the last stage, so the default target): the daemon alone, on an empty
# base. Its health check is the binary's own `healthcheck` command, in exec form.
FROM scratch AS collector
COPY --from=rootfs /rootfs/ /
ENV PATH=/usr/local/bin
USER 10001:10001
ENV HTTP_LISTEN_ADDRESS=0.0.0.0:8080
EXPOSE 8080
# The collector drains on SIGTERM for up to SHUTDOWN_DRAIN_TIMEOUT_SEC (20 s) and exits 0: give
# `docker stop` a longer timeout (-t 30), and orchestrators a longer grace period.
STOPSIGNAL SIGTERM
# Liveness only (/healthz); readiness (/readyz) is for orchestrators that route or scale on it.
# The collector asks itself (its port follows HTTP_LISTEN_ADDRESS): no shell, no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["telemetry-collector", "healthcheck"]
CMD ["telemetry-collector"]
