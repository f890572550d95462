#!/usr/bin/env bash
# Run helm with the given arguments, e.g. `hack/helm.sh lint charts/baton`.
#
# If `helm` is on PATH it is used as is. Otherwise the pinned version below is built from Go
# modules (`go install helm.sh/helm/v3/cmd/helm@<version>`, through the Go module proxy; no
# GitHub download) into a cache outside the repo, keyed by version:
#
#   ${BATON_CACHE_DIR:-$HOME/.cache/baton}/helm-<version>/bin/helm
#
# The first build takes a few minutes; later runs reuse the binary. Concurrent first runs
# wait for one another (flock) instead of building twice. Progress goes to stderr, so helm's
# stdout (e.g. `helm template`) is untouched.
#
# Env: BATON_CACHE_DIR          cache root (default $HOME/.cache/baton)
#      BATON_HELM_VERSION       helm v3 version to build (default below)
#      BATON_HELM_IGNORE_PATH=1 build and use the pinned helm even if `helm` is on PATH
#      BATON_BUILD_P            value for `go build -p` (default 2)
set -euo pipefail

helm_version="${BATON_HELM_VERSION:-v3.22.0}"
module="helm.sh/helm/v3"

if [[ "${BATON_HELM_IGNORE_PATH:-0}" != 1 ]] && command -v helm >/dev/null 2>&1; then
    exec helm "$@"
fi

cache_root="${BATON_CACHE_DIR:-$HOME/.cache/baton}"
dest="$cache_root/helm-$helm_version"
helm_bin="$dest/bin/helm"

log() {
    echo "helm.sh: $*" >&2
}

find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        log "helm is not on PATH and Go is not installed; install one of them"
        exit 1
    fi
}

build() {
    local go go_mod client_go k8s_minor started tmp_bin ldflags
    go="$(find_go)"
    log "building helm $helm_version from Go modules into $dest (first run only, a few minutes)"
    started=$SECONDS

    # Helm's Makefile stamps its version and the Kubernetes version it was built against
    # (the default of .Capabilities.KubeVersion); do the same, from helm's own go.mod.
    go_mod="$(GOFLAGS=-mod=mod "$go" mod download -json "$module@$helm_version" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
    if [[ -z "$go_mod" || ! -f "$go_mod" ]]; then
        log "cannot download $module@$helm_version"
        exit 1
    fi
    client_go="$(awk '$1 == "k8s.io/client-go" && $2 ~ /^v0\./ { print $2; exit }' "$go_mod")"
    k8s_minor="${client_go#v0.}"
    k8s_minor="${k8s_minor%%.*}"
    if [[ ! "$k8s_minor" =~ ^[0-9]+$ ]]; then
        log "cannot read the k8s.io/client-go version from $go_mod"
        exit 1
    fi
    ldflags="-s -w -X $module/internal/version.version=$helm_version"
    ldflags+=" -X $module/internal/version.gitTreeState=clean"
    local pkg
    for pkg in pkg/lint/rules pkg/chartutil; do
        ldflags+=" -X $module/$pkg.k8sVersionMajor=1 -X $module/$pkg.k8sVersionMinor=$k8s_minor"
    done

    # Build into a temporary directory and move the result into place, so an interrupted
    # build never leaves a half-written binary in the cache.
    mkdir -p "$dest"
    tmp_bin="$(mktemp -d "$dest/tmp.XXXXXX")"
    trap 'rm -rf "$tmp_bin"' EXIT
    CGO_ENABLED=0 GOBIN="$tmp_bin" "$go" install -p "${BATON_BUILD_P:-2}" -trimpath \
        -ldflags "$ldflags" "$module/cmd/helm@$helm_version"
    mkdir -p "$dest/bin"
    mv -f "$tmp_bin/helm" "$helm_bin"
    rm -rf "$tmp_bin"
    trap - EXIT
    log "built helm $helm_version in $((SECONDS - started)) s: $helm_bin"
}

if [[ ! -x "$helm_bin" ]]; then
    mkdir -p "$cache_root"
    exec 9>"$cache_root/helm-$helm_version.lock"
    if ! flock -n 9; then
        log "another run is building helm $helm_version; waiting for it"
        flock 9
    fi
    # Someone else may have built it while we waited.
    if [[ ! -x "$helm_bin" ]]; then
        build
    fi
    exec 9>&-
fi

exec "$helm_bin" "$@"
