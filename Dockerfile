# One image for the controller, the agent and the CNI plugin (the chart's "Image contract",
# charts/weft/README.md): the three binaries in /usr/local/bin, `nft` (the agent writes
# nftables through `nft -f -`), and /bin/sh with cp, chmod and mv for the CNI install
# init container. The controller runs as uid 65532; the agent as root with NET_ADMIN.
#
#   docker build -t ghcr.io/weft-dev/weft:dev .
#
# Build stage: the same Debian release as the runtime, so the binaries find their glibc.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p weft-controller -p weft-agent -p weft-cni -p weft-dns --bins \
 && mkdir -p /out \
 && cp target/release/weft-controller target/release/weft-agent target/release/weft-cni \
    target/release/weft-dns /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weft-controller"]
