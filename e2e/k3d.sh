#!/usr/bin/env bash
# Runs baton's end-to-end tests against a k3d cluster, for machines with Docker.
#
# usage: e2e/k3d.sh [CLUSTER_NAME]     (default: baton-e2e)
#
# Creates the cluster (if missing), builds the operator image from the Dockerfile and
# imports it, installs the CRDs, then runs `cargo test -p baton-e2e` with
# BATON_E2E_USE_EXISTING=1. Delete the cluster afterwards with `k3d cluster delete NAME`.
set -euo pipefail

name="${1:-baton-e2e}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="baton:e2e"

for tool in docker k3d kubectl cargo; do
    command -v "$tool" > /dev/null || {
        echo "k3d.sh: $tool is required" >&2
        exit 1
    }
done

if ! k3d cluster get "$name" > /dev/null 2>&1; then
    k3d cluster create "$name" --wait
fi
kubeconfig="$(mktemp)"
trap 'rm -f "$kubeconfig"' EXIT
k3d kubeconfig get "$name" > "$kubeconfig"
export KUBECONFIG="$kubeconfig"

docker build -t "$image" "$root"
k3d image import "$image" --cluster "$name"

cargo run --quiet --manifest-path "$root/Cargo.toml" -- crds | kubectl apply --server-side -f -
BATON_E2E_USE_EXISTING=1 cargo test --manifest-path "$root/Cargo.toml" -p baton-e2e
