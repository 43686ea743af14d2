# syntax=docker/dockerfile:1
# Coffer container image: a release build of the `coffer` binary on Debian slim, run as a
# non-root user with all state in one volume. How to build and run it: docs/DOCKER.md.

# Pin the toolchain for reproducible builds with --build-arg RUST_VERSION=1.95 (the
# workspace's rust-version is the floor; `1` follows the latest stable).
ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# ---- stage 1: build ----------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and the target dir between builds (BuildKit);
# the binary is copied out of the cached target dir because the mount is not in the layer.
# aws-lc-sys and the bundled SQLite compile with the image's C compiler (no cmake needed).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p coffer --locked \
    && install -m 0755 target/release/coffer /usr/local/bin/coffer

# ---- stage 2: runtime --------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: TLS to S3, KMS and MySQL. curl: only for HEALTHCHECK; it costs a few MB,
# and in exchange `docker ps` and orchestrators that read Docker health see a hung server,
# which a bare TCP probe would not. Versions are not pinned: Debian stable only ships
# security fixes, and pins break as soon as a point release replaces the pinned version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed, high uid/gid so volume ownership is predictable and never collides with a host
# user; no login shell, no home besides the data directory.
RUN groupadd --system --gid 10001 coffer \
    && useradd --system --uid 10001 --gid coffer --home-dir /var/lib/coffer \
        --no-create-home --shell /usr/sbin/nologin coffer \
    && install -d -m 0700 -o coffer -g coffer /var/lib/coffer

COPY --from=build /usr/local/bin/coffer /usr/local/bin/coffer

# Every listener binds 0.0.0.0 by default except the admin one (127.0.0.1:9090 outside a
# container); here it must be reachable for HEALTHCHECK, metrics scrapes and port mapping.
# Publish 9090 only to trusted networks.
# MALLOC_ARENA_MAX=2: glibc otherwise keeps freed transfer buffers in one arena per thread;
# measured peak RSS per 1 GiB SFTP transfer drops from 64/123 MiB (up/down) to 56/86 MiB.
ENV COFFER_DATA_DIR=/var/lib/coffer \
    COFFER_ADMIN__LISTEN=0.0.0.0:9090 \
    MALLOC_ARENA_MAX=2

# Keys, certificates, the SQLite database, the local object stores and the spool all live
# under COFFER_DATA_DIR. Declared after the chown so a new named volume starts owned by coffer.
VOLUME ["/var/lib/coffer"]
WORKDIR /var/lib/coffer

# SFTP, FTPES control, HTTPS, admin (health, metrics), FTP passive data ports.
EXPOSE 2222 2121 8443 9090 50000-50099

# Numeric so Kubernetes runAsNonRoot can verify the user without reading /etc/passwd.
USER 10001:10001

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--output", "/dev/null", "--max-time", "4", "http://127.0.0.1:9090/healthz"]

ENTRYPOINT ["coffer"]
CMD ["serve"]
