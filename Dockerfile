# The operator image where base images can be pulled: the same image as `make image`
# (hack/image.sh, buildah FROM scratch), which is the one the project builds and tests. The
# build stage runs `hack/image.sh rootfs`, so the binary (static glibc, cargo auditable) and
# the root filesystem are laid out by the same script; only the labels' values come from
# build arguments here:
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" -t baton:0.1.0 .
FROM rust:1.95-bookworm AS build
# binutils (readelf, strip) and ca-certificates come with this image.
WORKDIR /src
COPY . .
RUN bash hack/image.sh rootfs /rootfs

FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
WORKDIR /
EXPOSE 8080/tcp
ENTRYPOINT ["/baton"]
CMD ["run"]
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="baton" \
      org.opencontainers.image.description="A Kubernetes operator that carries one change through an ordered list of targets" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.source="$SOURCE"
