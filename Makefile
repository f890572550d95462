# The two commands of the README. Everything they need is built or fetched by the project's
# own scripts (Go-built control plane binaries are cached in ~/.cache/baton).

.PHONY: demo test lint tools unit-and-e2e crds image

## Run the main job: a local control plane (or the cluster in KUBECONFIG), the CRDs and a sample.
demo:
	bash hack/demo.sh

## Run every test: formatting, lints, unit and property tests, end-to-end tests on a real API server.
test: lint unit-and-e2e

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# The Go-built tools are built (or found in the cache) before the tests start, so their first
# build never competes with timing-bound end-to-end tests for the CPU. hack/browser.sh installs
# headless Chromium and chromedriver (the dashboard's browser tests) when they are missing;
# hack/faketime.sh libfaketime (a replica with its clock ahead, in the reliability suite).
# hack/image.sh builds the operator's image (buildah, a static release binary: minutes on a
# fresh machine), so the image test's own call of it only re-assembles the image.
tools:
	bash e2e/control-plane/build.sh > /dev/null
	bash e2e/kstatus/build.sh > /dev/null
	bash hack/helm.sh version --short
	bash hack/browser.sh > /dev/null
	bash hack/faketime.sh > /dev/null
	bash hack/image.sh > /dev/null

unit-and-e2e: tools
	cargo test --workspace --all-targets
	BATON_BENCH_PROFILE=short cargo run -q -p baton-e2e --bin baton-bench

## Build the operator's image (localhost/baton:<version>, FROM scratch, static binary, SBOM
## embedded) and write it as an OCI archive under target/image/; prints its digest and size.
image:
	bash hack/image.sh

## Regenerate crds/ (and the chart's copy) from the Rust types (a test fails when they are stale).
crds:
	cargo run --quiet -- crds --out-dir crds
	cp crds/*.yaml charts/baton/crds/
