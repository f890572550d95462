#!/usr/bin/env bash
# libfaketime, for the end-to-end test that runs a replica with its wall clock ahead: the
# distribution's package (Debian: faketime, which brings libfaketime). Installs it when missing
# (as root, or through sudo) and prints the path of the library to preload; does nothing when it
# is there.
set -euo pipefail

find_library() {
    local candidate
    for candidate in \
        "${BATON_LIBFAKETIME:-}" \
        /usr/lib/*/faketime/libfaketime.so.1 \
        /usr/lib/faketime/libfaketime.so.1 \
        /usr/local/lib/faketime/libfaketime.so.1; do
        if [[ -n "$candidate" && -f "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! find_library > /dev/null; then
    command -v apt-get > /dev/null || {
        echo "faketime.sh: install libfaketime (set BATON_LIBFAKETIME to libfaketime.so.1)" >&2
        exit 1
    }
    as_root=()
    if ((EUID != 0)); then
        command -v sudo > /dev/null || {
            echo "faketime.sh: installing faketime needs root (or sudo)" >&2
            exit 1
        }
        as_root=(sudo)
    fi
    echo "faketime.sh: installing faketime" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing (a fresh container) or stale (a removed version).
    if ! "${as_root[@]}" apt-get install -y -qq --no-install-recommends faketime > /dev/null 2>&1; then
        "${as_root[@]}" apt-get update -qq > /dev/null
        "${as_root[@]}" apt-get install -y -qq --no-install-recommends faketime > /dev/null
    fi
fi
find_library || {
    echo "faketime.sh: faketime is installed but libfaketime.so.1 was not found" >&2
    exit 1
}
