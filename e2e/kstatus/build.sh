#!/usr/bin/env bash
# Build the kstatus command (main.go: kstatus's status.Compute over objects on stdin or in files)
# from this Go module into a cache outside the repo:
#
#   ${BATON_CACHE_DIR:-$HOME/.cache/baton}/kstatus-<cli-utils version>-<source hash>/bin/kstatus
#
# The cli-utils version comes from go.mod; the hash covers main.go, go.mod and go.sum, so an
# edit of any of them builds a new binary instead of reusing a stale one.
# If the binary is already there, nothing is built.
# Progress goes to stderr; stdout gets exactly one line, the bin dir, so
#   BIN_DIR="$(e2e/kstatus/build.sh)"
# works. `build.sh --print-dir` prints that path without building anything.
#
# Env: BATON_CACHE_DIR  cache root (default $HOME/.cache/baton)
#      BATON_BUILD_P    value for `go build -p` (default 2)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    echo "usage: $0 [--print-dir]" >&2
}

print_dir_only=0
case "${1:-}" in
    "") ;;
    --print-dir) print_dir_only=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage
        exit 2
        ;;
esac

cli_utils_version="$(awk '($1 == "require" && $2 == "sigs.k8s.io/cli-utils") { print $3; exit }
    ($1 == "sigs.k8s.io/cli-utils" && $2 ~ /^v/) { print $2; exit }' "$here/go.mod")"
if [[ -z "$cli_utils_version" ]]; then
    echo "build.sh: cannot read the sigs.k8s.io/cli-utils version from go.mod" >&2
    exit 1
fi
source_hash="$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"

cache_root="${BATON_CACHE_DIR:-$HOME/.cache/baton}"
dest="$cache_root/kstatus-$cli_utils_version-$source_hash"
bin_dir="$dest/bin"

if ((print_dir_only)); then
    echo "$bin_dir"
    exit 0
fi

mkdir -p "$dest"
# Serialise concurrent runs (e.g. two test jobs starting at once).
exec 9>"$dest/.lock"
if ! flock -n 9; then
    echo "build.sh: another build holds $dest/.lock, waiting..." >&2
    flock 9
fi

if [[ -x "$bin_dir/kstatus" ]]; then
    echo "reusing cached kstatus in $bin_dir" >&2
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

echo "building kstatus with sigs.k8s.io/cli-utils $cli_utils_version (first run, about a minute)..." >&2
start=$SECONDS
# In the background so that a signal to this script is handled at once
# (bash runs traps only after a foreground child exits).
CGO_ENABLED=0 go build -C "$here" -p "${BATON_BUILD_P:-2}" -trimpath -ldflags "-s -w" \
    -o "$tmp/bin/kstatus" . &
go_pid=$!
wait "$go_pid"
go_pid=
[[ -x "$tmp/bin/kstatus" ]]

# Swap the finished directory in with a rename, so an interrupted build never
# leaves a half-filled bin/ behind.
if [[ -e "$bin_dir" ]]; then
    mv "$bin_dir" "$tmp/old-bin"
fi
mv "$tmp/bin" "$bin_dir"
echo "built kstatus in $((SECONDS - start))s into $bin_dir" >&2
echo "$bin_dir"
