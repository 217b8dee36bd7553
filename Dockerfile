# syntax=docker/dockerfile:1
# Both kev binaries from one build, each in its own small image:
#   docker build --target producer -t kev-producer .
#   docker build --target enricher -t kev-enricher .
# The build stage has the toolchain and the C/C++ tools librdkafka's source build needs; the
# final images are distroless (glibc, libgcc, OpenSSL, CA certificates; no shell, no package
# manager) and run as the unprivileged user 65532.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make pkg-config libssl-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kev-producer -p kev-enricher \
 && mkdir -p /out \
 && cp target/release/kev-producer target/release/kev-enricher /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER 65532:65532
EXPOSE 8080

# `watch` in a cluster; `replay FILE...` for dumps. The bundled real events (Apache-2.0, see
# /usr/share/kev/k8s-events/README.md) make the replay default of docker-compose.yml work.
FROM runtime AS producer
COPY --from=build /out/kev-producer /usr/local/bin/kev-producer
COPY tests/data/k8s-events /usr/share/kev/k8s-events
ENTRYPOINT ["/usr/local/bin/kev-producer"]
CMD ["watch"]

FROM runtime AS enricher
COPY --from=build /out/kev-enricher /usr/local/bin/kev-enricher
ENTRYPOINT ["/usr/local/bin/kev-enricher"]
CMD ["run"]
