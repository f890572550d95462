#!/usr/bin/env bash
# Build the test cluster's binaries from the Go modules pinned in this
# directory into a cache outside the repo:
#
#   ${BATON_CACHE_DIR:-$HOME/.cache/baton}/k8s-<version>-etcd-<version>-kwok-<version>/bin/
#
# the control plane (etcd/go.mod: etcd; go.mod: kube-apiserver,
# kube-controller-manager) and the workload parts (go.mod: kube-scheduler;
# kwok/go.mod: kwok, the fake kubelet). A binary already there is not built
# again; each one is moved into bin/ only once complete.
# Progress goes to stderr; stdout gets exactly one line, the bin dir, so
#   BIN_DIR="$(e2e/control-plane/build.sh)"
# works. `build.sh --print-dir` prints that path without building anything;
# `build.sh --core` builds only the control plane (start.sh --core needs no more).
#
# Env: BATON_CACHE_DIR  cache root (default $HOME/.cache/baton)
#      BATON_BUILD_P    value for `go build -p` (default 2)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    echo "usage: $0 [--print-dir] [--core]" >&2
}

print_dir_only=0
core_only=0
for arg in "$@"; do
    case "$arg" in
        --print-dir) print_dir_only=1 ;;
        --core) core_only=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage
            exit 2
            ;;
    esac
done

# Versions come from the go.mod files so there is one source of truth.
mod_version() { # <go.mod> <module path>
    awk -v m="$2" '($1 == "require" && $2 == m) { print $3; exit } ($1 == m && $2 ~ /^v/) { print $2; exit }' "$1"
}
k8s_version="$(mod_version "$here/go.mod" k8s.io/kubernetes)"
etcd_version="$(mod_version "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)"
kwok_version="$(mod_version "$here/kwok/go.mod" sigs.k8s.io/kwok)"
if [[ -z "$k8s_version" || -z "$etcd_version" || -z "$kwok_version" ]]; then
    echo "build.sh: cannot read the pinned versions from go.mod files" >&2
    exit 1
fi
k8s_minor="${k8s_version#v1.}"
k8s_minor="${k8s_minor%%.*}"

cache_root="${BATON_CACHE_DIR:-$HOME/.cache/baton}"
dest="$cache_root/k8s-$k8s_version-etcd-$etcd_version-kwok-$kwok_version"
bin_dir="$dest/bin"
binaries=(etcd kube-apiserver kube-controller-manager)
((core_only)) || binaries+=(kube-scheduler kwok)

if ((print_dir_only)); then
    echo "$bin_dir"
    exit 0
fi

complete() {
    local b
    for b in "${binaries[@]}"; do
        [[ -x "$bin_dir/$b" ]] || return 1
    done
}

mkdir -p "$dest"
# Serialise concurrent runs (e.g. two test jobs starting at once).
exec 9>"$dest/.lock"
if ! flock -n 9; then
    echo "build.sh: another build holds $dest/.lock, waiting..." >&2
    flock 9
fi

if complete; then
    echo "reusing cached binaries in $bin_dir" >&2
    echo "$bin_dir"
    exit 0
fi

if ! command -v go > /dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
        PATH="/usr/local/go/bin:$PATH"
    else
        echo "build.sh: go not found in PATH" >&2
        exit 1
    fi
fi

# Leftovers of a build that was killed outright (we hold the lock, so no
# other build is using them).
rm -rf "$dest"/.build.*
tmp="$(mktemp -d "$dest/.build.XXXXXX")"
go_pid=
cleanup() {
    if [[ -n "$go_pid" ]]; then
        kill -TERM "$go_pid" 2> /dev/null || true
        wait "$go_pid" 2> /dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export CGO_ENABLED=0
par="${BATON_BUILD_P:-2}"

k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version"
    k8s_ldflags+=" -X $pkg.gitMajor=1"
    k8s_ldflags+=" -X $pkg.gitMinor=$k8s_minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done
etcd_ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version"
# kwok's version is a constant in its source (sigs.k8s.io/kwok/pkg/consts).
kwok_ldflags="-s -w"

build() { # <name> <module dir> <ldflags> <package>
    local name="$1" dir="$2" ldflags="$3" pkg="$4" start
    [[ " ${binaries[*]} " == *" $name "* ]] || return 0
    [[ -x "$bin_dir/$name" ]] && return 0
    echo "building $name (first run, takes minutes)..." >&2
    start=$SECONDS
    # In the background so that a signal to this script is handled at once
    # (bash runs traps only after a foreground child exits).
    go build -C "$dir" -p "$par" -trimpath -ldflags "$ldflags" -o "$tmp/bin/$name" "$pkg" &
    go_pid=$!
    wait "$go_pid"
    go_pid=
    # A rename within one file system: bin/ never holds a half-written binary.
    mv "$tmp/bin/$name" "$bin_dir/$name"
    echo "built $name in $((SECONDS - start))s" >&2
}

total_start=$SECONDS
mkdir -p "$tmp/bin" "$bin_dir"
build etcd "$here/etcd" "$etcd_ldflags" .
build kube-apiserver "$here" "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager "$here" "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-controller-manager
build kube-scheduler "$here" "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-scheduler
build kwok "$here/kwok" "$kwok_ldflags" sigs.k8s.io/kwok/cmd/kwok
complete
echo "built the missing binaries in $((SECONDS - total_start))s into $bin_dir" >&2
echo "$bin_dir"
