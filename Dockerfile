# The operator image: a static musl build on a distroless, non-root base.
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin baton

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/baton /baton
USER 65532:65532
ENTRYPOINT ["/baton"]
CMD ["run"]
