#!/usr/bin/env bash
# The browser the dashboard's end-to-end tests drive: headless Chromium and its WebDriver, from
# the distribution's packages (Debian: chromium, chromium-driver). Installs them when missing
# (as root, or through sudo) and prints where they are; does nothing when both are there.
set -euo pipefail

chromium="${BATON_CHROMIUM:-/usr/bin/chromium}"
driver="${BATON_CHROMEDRIVER:-/usr/bin/chromedriver}"

if [[ ! -x "$chromium" || ! -x "$driver" ]]; then
    command -v apt-get > /dev/null || {
        echo "browser.sh: install Chromium and chromedriver (set BATON_CHROMIUM and BATON_CHROMEDRIVER to their paths)" >&2
        exit 1
    }
    as_root=()
    if ((EUID != 0)); then
        command -v sudo > /dev/null || {
            echo "browser.sh: installing chromium and chromium-driver needs root (or sudo)" >&2
            exit 1
        }
        as_root=(sudo)
    fi
    echo "browser.sh: installing chromium and chromium-driver" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing (a fresh container) or stale (a removed version).
    "${as_root[@]}" apt-get update -qq > /dev/null
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver > /dev/null
fi
echo "$chromium"
echo "$driver"
