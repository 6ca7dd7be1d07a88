# Multi-stage build of a small runtime image holding rsql-client.
#   docker build -t rsql .
#   docker run --rm --network host -v "$PWD/sql:/sql" \
#     -e MYSQL_HOST=127.0.0.1 -e MYSQL_PORT=3306 -e MYSQL_USER=rsql -e MYSQL_PASSWORD=... \
#     -e KAFKA_BOOTSTRAP=127.0.0.1:9092 rsql -f /sql/demo.sql
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY sql ./sql
COPY tests ./tests
RUN cargo build --release -p rsql-client && strip target/release/rsql-client

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/rsql-client /usr/local/bin/rsql-client
COPY sql /sql
ENTRYPOINT ["/usr/local/bin/rsql-client"]
