# The orchestrator's container image: the service (`orchestrator-server`) and the CLI
# (`orchestrator`, also the health check), on a slim Debian, as an unprivileged user, with its
# SQLite database in the volume /data.
#
#   docker build -t orchestrator:latest .
#   docker run -p 8000:8000 orchestrator:latest
#
# Both base images are build arguments, so a mirror or a locally made image can stand in:
#   --build-arg BUILDER_IMAGE=… --build-arg RUNTIME_IMAGE=…
# The cargo profile is one too: `release` (the default, whole-program optimised) or, where the
# build's time matters more than the binary's last tenth of speed, `release-check`:
#   --build-arg PROFILE=release-check
# Behind a proxy that re-signs TLS, hand cargo its CA bundle for the build only (nothing of it
# stays in the image):
#   --secret id=cacert,src=/etc/ssl/certs/ca-certificates.crt

ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
ARG PROFILE=release
WORKDIR /src
ENV CARGO_HOME=/usr/local/cargo CARGO_TERM_COLOR=never
COPY . .
# The registry and the target directory are cache mounts, so a rebuild after a code change
# compiles only the workspace; the binaries are copied out of the cache in the same step.
# Cargo judges freshness by modification times, and the cached target may hold artifacts
# built from other sources later than these files were written: touching the workspace's own
# files makes them newer than any of its cached artifacts (dependencies stay cached).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    --mount=type=secret,id=cacert,required=false \
    if [ -s /run/secrets/cacert ]; then export CARGO_HTTP_CAINFO=/run/secrets/cacert; fi \
    && find . -path ./target -prune -o -type f -exec touch {} + \
    && cargo build --profile "$PROFILE" --locked -p orchestrator-server -p orchestrator-client \
    && install -d /out/bin \
    && install -m 0755 "target/$PROFILE/orchestrator-server" "target/$PROFILE/orchestrator" /out/bin/ \
    && install -d -o 65532 -g 65532 /out/data

FROM ${RUNTIME_IMAGE}
# The HTTP client verifies TLS against the system's roots; the runtime image may have none.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data /data
ENV HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite:////data/orchestrator.db \
    LOG_FORMAT=json
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
# No curl needed: the CLI asks /health and exits 4 when the service is unhealthy (3 when it
# cannot be reached). The shell form, so that the port follows PORT (`-e PORT=9000`): a
# RUNTIME_IMAGE without /bin/sh needs a health check of its own. The start period covers a
# start-up on PostgreSQL whose migrations wait for a table a long transaction holds (up to
# about three minutes of tries; waiting for another replica's migrations is not bounded, and
# shows unhealthy once past it): a failed check then does not count, while the first one that
# passes marks the container healthy at once.
HEALTHCHECK --interval=10s --timeout=5s --start-period=240s --retries=3 \
    CMD /usr/local/bin/orchestrator --url "http://127.0.0.1:${PORT:-8000}" --timeout 4 health
ENTRYPOINT ["/usr/local/bin/orchestrator-server"]
