# atelier-lambda: build the `lambda` binary, then ship it in a small image.
FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY examples examples
RUN cargo build --release --locked --bin lambda

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/lambda /usr/local/bin/lambda
WORKDIR /app
COPY datasets datasets
COPY config config
ENTRYPOINT ["lambda"]
CMD ["run", "--brokers", "broker:9092", "--views-out", "/app/output/serving_view"]
