# syntax=docker/dockerfile:1
#
# Container image of the gateway: a Rust build stage, then a slim Debian runtime that holds
# only the binary and runs it as an unprivileged user.
#
#   docker build -t commenda-sync-gateway .
#   docker run --rm -p 50051:50051 -p 9090:9090 commenda-sync-gateway
#
# The build keeps cargo's registry and target directory in BuildKit cache mounts, so a
# rebuild after a source change recompiles the crate only, not its dependencies.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Only what the build reads: the manifest and lock file, the proto compiler step, sources.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src

RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin commenda-sync-gateway \
    && install -D -m 0755 target/release/commenda-sync-gateway /out/commenda-sync-gateway


# The same Debian release as the build stage, so the binary finds the glibc it was linked
# against. No CA bundle is installed: the gateway trusts the root certificates compiled into
# it (webpki-roots), plus a private CA given with GATEWAY_UPSTREAM_CA_FILE.
FROM debian:bookworm-slim AS runtime

COPY --from=build /out/commenda-sync-gateway /usr/local/bin/commenda-sync-gateway

# A numeric user and group, so that Kubernetes can verify runAsNonRoot without a passwd entry.
USER 10001:10001

# gRPC (with health and reflection) and the Prometheus metrics listener.
EXPOSE 50051 9090

# Listen on every interface inside the container, serve metrics on the exposed port, and
# log JSON lines on stderr.
ENV GATEWAY_LISTEN=0.0.0.0:50051 \
    GATEWAY_METRICS_LISTEN=0.0.0.0:9090 \
    GATEWAY_LOG_FORMAT=json

# The gateway is PID 1 and handles SIGTERM itself: health turns NOT_SERVING, in-flight calls
# drain within GATEWAY_DRAIN_TIMEOUT_MS, then it exits.
ENTRYPOINT ["/usr/local/bin/commenda-sync-gateway"]
