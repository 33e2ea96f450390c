# Multi-stage build: compile in the Rust image, run from a small distroless image as non-root.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY assets assets
COPY clients clients
# The workspace names the load tool; only the server is built.
COPY bench/Cargo.toml bench/Cargo.toml
COPY bench/src bench/src
RUN cargo build --release --locked -p herald && strip target/release/herald

# glibc and libgcc only; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/herald /usr/local/bin/herald
COPY deploy/herald.toml /etc/herald/herald.toml
ENV HERALD_LISTEN=0.0.0.0:8000 \
    HERALD_CONFIG=/etc/herald/herald.toml
EXPOSE 8000
USER nonroot
# The binary checks itself: no curl in the image.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/herald", "health", "--url", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["gateway"]
