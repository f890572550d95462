# The operator image: a static musl build on a distroless, non-root base.
FROM rust:1.95-alpine AS build
# ring (TLS) compiles C and assembly.
RUN apk add --no-cache build-base
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin baton --bin kubectl-baton

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/baton /baton
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/baton"]
CMD ["run"]
