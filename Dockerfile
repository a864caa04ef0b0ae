# syntax=docker/dockerfile:1
# remediator image: `docker build -t remediator:local .` (docker-compose.yml builds it for you).
#
# Build stage: the toolchain the test suite uses, plus what rdkafka's bundled librdkafka needs
# (its configure script + make, zlib via pkg-config). Cache mounts keep the crates and the target
# dir between builds; the binary is copied out of the cached target dir.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY schemas ./schemas
# Cargo.toml declares a [[bench]] target: cargo refuses a manifest whose target file is missing.
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin remediator \
 && install -D -m 0755 target/release/remediator /out/remediator

# Runtime: Debian slim (glibc, CA certificates for TLS to brokers), curl for the compose health
# check, a non-root user with the UID the Kubernetes manifests run as (deploy/deployment.yaml).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 remediator \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin remediator
COPY --from=build /out/remediator /usr/local/bin/remediator
# The shipped catalogue; mount your own over it (or set REMEDIATOR_RUNBOOKS).
COPY config/runbooks.yaml /etc/remediator/runbooks.yaml
ENV REMEDIATOR_RUNBOOKS=/etc/remediator/runbooks.yaml
USER 65532:65532
WORKDIR /
EXPOSE 9464
ENTRYPOINT ["remediator"]
CMD ["run"]
