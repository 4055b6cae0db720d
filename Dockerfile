# The mckv binary in a small image. Build: docker build -t mckv .
# Run the default 3-node layout with docker compose (docker-compose.yml).
FROM rust:1-bookworm AS build
WORKDIR /src
# The manifest names the benches, so they come along to build the binary.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin mckv

FROM debian:bookworm-slim
COPY --from=build /src/target/release/mckv /usr/local/bin/mckv
COPY config.ini /etc/mckv/config.ini
# Relative log_file and data_dir paths of the config land here.
WORKDIR /var/lib/mckv
ENTRYPOINT ["mckv"]
CMD ["server", "--config", "/etc/mckv/config.ini", "--node", "0"]
