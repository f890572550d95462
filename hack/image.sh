#!/usr/bin/env bash
# The operator's image, built from what the package registries serve: a statically linked
# release binary (glibc with crt-static, built by `cargo auditable` so that the binary carries
# its own dependency list, the SBOM) assembled `FROM scratch` with buildah, run as 65532:65532,
# with Debian's CA bundle: kube's rustls-tls verifies a registered cluster whose kubeconfig
# names no CA against the system roots, read from /etc/ssl/certs/ca-certificates.crt.
#
#   hack/image.sh              builds the image; writes, under target/image/:
#       baton-<version>.tar        the image as an OCI archive (`skopeo copy oci-archive:...`,
#                                  `podman load -i ...`, or push it from buildah's storage)
#       baton-<version>.deps.json  the SBOM embedded in the binary, extracted (cargo auditable's
#                                  format: every crate, its version, its dependencies)
#       baton-<version>.digest     the image's manifest digest
#     and keeps the image in buildah's local storage as localhost/baton:<version>. Its last
#     lines are `key: value` pairs (image, digest, size, archive, sbom, revision), which the
#     image's end-to-end test reads.
#   hack/image.sh rootfs DIR   builds the binary and lays the image's root filesystem out in
#     DIR, without buildah or root: the Dockerfile runs it, so both build the same image.
#
# buildah, podman, runc and ca-certificates (Debian packages) are installed when missing, as
# root or through sudo; cargo-auditable is built from crates.io into ${BATON_CACHE_DIR:-~/.cache/baton} on
# first use (about 80 s). buildah runs as root with the vfs storage driver, which needs no
# overlay or fuse support from the machine (each layer is a plain copy; this image has one).
#
# Env: BATON_IMAGE_NAME     repository of the image (default localhost/baton)
#      BATON_IMAGE_SOURCE   the org.opencontainers.image.source label (default: the git remote
#                           `origin` when it is an https URL; left out otherwise)
#      BATON_CACHE_DIR      cache root (default $HOME/.cache/baton)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { echo "image.sh: $*" >&2; }

# The musl target does not come with the toolchain and cannot be added here (no rustup
# downloads), so the binary is the glibc target's with crt-static; glibc >= 2.34 has its files
# and dns name lookups built in, so a static binary resolves names without loading NSS modules.
# The explicit --target keeps RUSTFLAGS off build scripts and proc macros, which must stay
# ordinary dynamic host programs.
arch="$(uname -m)"
target="$arch-unknown-linux-gnu"
case "$arch" in
    x86_64) oci_arch=amd64 ;;
    aarch64) oci_arch=arm64 ;;
    *) oci_arch="$arch" ;;
esac
auditable_version=0.7.7
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
binary="${CARGO_TARGET_DIR:-$root/target}/$target/release/baton"

as_root=()
if ((EUID != 0)); then
    as_root=(sudo)
fi

install_packages() { # <package>...
    command -v apt-get > /dev/null || {
        log "install $*"
        exit 1
    }
    if ((EUID != 0)) && ! command -v sudo > /dev/null; then
        log "installing $* needs root (or sudo)"
        exit 1
    fi
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing (a fresh container) or stale (a removed version).
    if ! "${as_root[@]}" apt-get install -y -qq --no-install-recommends "$@" > /dev/null 2>&1; then
        "${as_root[@]}" apt-get update -qq > /dev/null
        "${as_root[@]}" apt-get install -y -qq --no-install-recommends "$@" > /dev/null
    fi
}

build_binary() {
    local cache_root auditable_root
    cache_root="${BATON_CACHE_DIR:-$HOME/.cache/baton}"
    auditable_root="$cache_root/cargo-auditable-$auditable_version"
    if [[ ! -x "$auditable_root/bin/cargo-auditable" ]]; then
        mkdir -p "$cache_root"
        exec 9> "$auditable_root.lock"
        flock 9 # concurrent first runs wait for one build instead of racing
        if [[ ! -x "$auditable_root/bin/cargo-auditable" ]]; then
            log "building cargo-auditable $auditable_version from crates.io (first run only)"
            cargo install --quiet --locked --version "$auditable_version" \
                --root "$auditable_root" cargo-auditable
        fi
        exec 9>&-
    fi
    PATH="$auditable_root/bin:$PATH" RUSTFLAGS='-C target-feature=+crt-static' \
        cargo auditable build --quiet --release --locked --target "$target" --bin baton

    # A dynamically linked binary does not start in a scratch image (no loader): refuse one.
    if readelf -lW "$binary" | grep -q INTERP; then
        log "$binary is dynamically linked (it has an ELF interpreter)"
        exit 1
    fi
    readelf -SW "$binary" | grep -q '\.dep-v0' || {
        log "$binary carries no dependency list (.dep-v0): was it built by cargo auditable?"
        exit 1
    }
}

# Lays the root filesystem out in $1 as distroless' static image is: the binary at /, a passwd
# and group naming the non-root user (for tools that map uids to names), an nsswitch.conf for
# glibc's built-in files and dns lookups (the container runtime provides /etc/hosts and
# /etc/resolv.conf), a world-writable /tmp, and the CA bundle.
lay_out_rootfs() { # <dir>
    local dir="$1"
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] || {
        log "/etc/ssl/certs/ca-certificates.crt is missing (Debian: ca-certificates)"
        exit 1
    }
    mkdir -p "$dir/etc/ssl/certs" "$dir/tmp"
    # Symbols and debug information only: the .dep-v0 section (the SBOM) stays.
    strip --strip-all -o "$dir/baton" "$binary"
    cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$dir/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' > "$dir/etc/group"
    printf '%s\n' 'hosts: files dns' > "$dir/etc/nsswitch.conf"
    chmod -R go-w,a+rX "$dir"
    chmod 0755 "$dir/baton"
    chmod 1777 "$dir/tmp"
}

if [[ "${1:-}" == rootfs ]]; then
    [[ -n "${2:-}" ]] || {
        log "usage: hack/image.sh rootfs DIR"
        exit 2
    }
    build_binary
    lay_out_rootfs "$2"
    exit 0
fi

name="${BATON_IMAGE_NAME:-localhost/baton}"
ref="$name:$version"
out="$root/target/image"
archive="$out/baton-$version.tar"
sbom="$out/baton-$version.deps.json"
digest_file="$out/baton-$version.digest"

# podman and runc run the image in its end-to-end test (e2e/tests/image.rs says why runc).
missing=()
command -v buildah > /dev/null || missing+=(buildah)
command -v podman > /dev/null || missing+=(podman)
command -v runc > /dev/null || missing+=(runc)
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
((${#missing[@]} == 0)) || install_packages "${missing[@]}"

started=$SECONDS
build_binary
build_seconds=$((SECONDS - started))

staging="$(mktemp -d "${TMPDIR:-/tmp}/baton-image.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
lay_out_rootfs "$staging/rootfs"

revision="$(git rev-parse HEAD 2> /dev/null || echo unknown)"
[[ -z "$(git status --porcelain 2> /dev/null)" ]] || revision="$revision-dirty"
source_url="${BATON_IMAGE_SOURCE:-$(git remote get-url origin 2> /dev/null || true)}"
[[ "$source_url" == https://* ]] || source_url=""
# The commit's time, not the build's: the same commit gives the same image configuration.
created="$(git log -1 --format=%ct 2> /dev/null || date +%s)"
labels=(
    --label "org.opencontainers.image.title=baton"
    --label "org.opencontainers.image.description=A Kubernetes operator that carries one change through an ordered list of targets"
    --label "org.opencontainers.image.licenses=Apache-2.0"
    --label "org.opencontainers.image.version=$version"
    --label "org.opencontainers.image.revision=$revision"
)
[[ -z "$source_url" ]] || labels+=(--label "org.opencontainers.image.source=$source_url")

buildah=("${as_root[@]}" buildah --storage-driver vfs)
container="$("${buildah[@]}" from --quiet scratch)"
trap 'rm -rf "$staging"; "${buildah[@]}" rm "$container" > /dev/null 2>&1 || true' EXIT
"${buildah[@]}" copy --quiet --chown 0:0 "$container" "$staging/rootfs/." / > /dev/null
"${buildah[@]}" config \
    --os linux --arch "$oci_arch" \
    --user 65532:65532 \
    --workingdir / \
    --entrypoint '["/baton"]' \
    --cmd run \
    --port 8080/tcp \
    "${labels[@]}" \
    "$container"
"${buildah[@]}" commit --quiet --rm --omit-history --identity-label=false \
    --timestamp "$created" "$container" "$ref" > /dev/null
trap 'rm -rf "$staging"' EXIT
# Images the tag no longer names are left over from earlier builds.
"${buildah[@]}" rmi --prune > /dev/null 2>&1 || true

mkdir -p "$out"
rm -f "$archive" "$digest_file"
"${buildah[@]}" push --quiet --digestfile "$digest_file" "$ref" "oci-archive:$archive:$ref"
if ((EUID != 0)); then
    sudo chown "$(id -u):$(id -g)" "$archive" "$digest_file"
fi

# The SBOM as JSON beside the archive: the section holds zlib-compressed JSON.
objcopy --dump-section ".dep-v0=$staging/dep-v0" "$staging/rootfs/baton"
python3 - "$staging/dep-v0" "$sbom" << 'PY'
import json, sys, zlib
with open(sys.argv[1], "rb") as section, open(sys.argv[2], "w") as out:
    json.dump(json.loads(zlib.decompress(section.read())), out, indent=1)
PY

size="$("${buildah[@]}" images --format '{{.Size}}' "$ref" | head -n 1)"
crates="$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["packages"]))' "$sbom")"
log "built $ref in $((SECONDS - started)) s (the binary: $build_seconds s)"
echo "image: $ref"
echo "digest: $(cat "$digest_file")"
echo "size: $size uncompressed (archive $(du -h "$archive" | cut -f1), binary $(du -h "$staging/rootfs/baton" | cut -f1))"
echo "archive: $archive"
echo "sbom: $sbom ($crates crates)"
echo "revision: $revision"
