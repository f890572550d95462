# The two commands of the README. Everything they need is built or fetched by the project's
# own scripts (Go-built control plane binaries are cached in ~/.cache/baton).

.PHONY: demo test lint unit-and-e2e crds

## Run the main job: a local control plane (or the cluster in KUBECONFIG), the CRDs and a sample.
demo:
	bash hack/demo.sh

## Run every test: formatting, lints, unit and property tests, end-to-end tests on a real API server.
test: lint unit-and-e2e

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

unit-and-e2e:
	cargo test --workspace --all-targets

## Regenerate crds/ from the Rust types (a test fails when they are stale).
crds:
	cargo run --quiet -- crds --out-dir crds
