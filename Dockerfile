# Switchyard container image: a Rust build stage and a small Debian runtime.
#   docker build -t switchyard .
#   docker run -p 8080:8080 -p 9901:9901 switchyard
# The image runs config/container.yaml (listeners on 0.0.0.0, upstreams
# app-v1:8080 and app-v2:8080); mount your own over
# /etc/switchyard/switchyard.yaml.

FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, with placeholder sources, so this layer is cached until
# Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
# Every [[bench]] of Cargo.toml needs its placeholder, or cargo refuses the
# manifest (scripts/lint-dockerfile.sh checks).
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/request_path.rs \
 && echo 'fn main() {}' > benches/response_head.rs \
 && cargo build --release --locked

# The real sources (and the demo's config, compiled in); touch them so cargo
# rebuilds over the placeholders.
COPY src ./src
COPY benches ./benches
COPY config/demo.yaml ./config/demo.yaml
RUN touch src/main.rs src/lib.rs benches/*.rs \
 && cargo build --release --locked \
 && cp target/release/switchyard /switchyard \
 && strip --strip-debug /switchyard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchyard
COPY --from=build /switchyard /usr/local/bin/switchyard
COPY config/container.yaml /etc/switchyard/switchyard.yaml
EXPOSE 8080 9901
USER 10001
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["run", "-c", "/etc/switchyard/switchyard.yaml"]
