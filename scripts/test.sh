#!/usr/bin/env bash
# Runs every test: unit tests, the seeded Raft simulation, and end-to-end tests that start
# the real binaries. Installs what it needs first. This is the command in README.md and the
# one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=setup.sh
. scripts/setup.sh

# Style first: a formatting or lint problem fails the run before the long part does.
# Scripts too: a quote in a string once broke bench.sh's last step, which no test runs.
for script in scripts/*.sh scripts/models/*.sh .ci/run; do
    bash -n "$script" || { echo "test: $script does not parse" >&2; exit 1; }
done
for tool in rustfmt clippy; do
    if ! cargo "${tool/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$tool" || { echo "test: cargo ${tool/rustfmt/fmt} is missing; install it with: rustup component add $tool" >&2; exit 1; }
    fi
done
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
(cd workloads && cargo clippy --all-targets --locked -- -D warnings)
# The edge runtime's view of edgeplane-api: without the `crd` feature, and so without kube,
# k8s-openapi and schemars (ARCHITECTURE.md). The workspace build above unifies features away.
cargo clippy -p edgeplane-api --locked -- -D warnings
if cargo tree -p edgeplane-edge-runtime -e normal --locked --prefix none | grep -E '^(kube|k8s-openapi|schemars) '; then
    echo "test: the edge runtime depends on the crates above; they belong behind edgeplane-api's crd feature" >&2
    exit 1
fi

# The console's vendored chart library is the npm package its lock file pins.
bash scripts/ui-vendor.sh --check

# The workload modules (wasm32) that the edge runtime's tests and the end-to-end tests run.
bash scripts/build-workloads.sh

# ONNX Runtime in Python (PyPI): the reference the inference tests compare the edge's answers to.
# Its wheel carries ONNX Runtime's C library, the edge's second inference backend.
EDGEPLANE_PYTHON=$(python_venv target/venv-onnx scripts/models/reference-requirements.txt)
EDGEPLANE_ONNXRUNTIME_LIB=$("$EDGEPLANE_PYTHON" -c 'import glob, os, onnxruntime; print(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*"))[0])')
export EDGEPLANE_PYTHON EDGEPLANE_ONNXRUNTIME_LIB
# schemathesis (PyPI), which tests/tests/openapi_conformance.rs runs against the OpenAPI document.
EDGEPLANE_SCHEMATHESIS=$(dirname "$(python_venv target/venv-schemathesis scripts/schemathesis-requirements.txt)")/st
export EDGEPLANE_SCHEMATHESIS

# The end-to-end tests run the binaries from target/debug, which `cargo test` alone does not
# rebuild for other packages: build them first so no test runs a stale binary.
cargo build --workspace --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# The workloads and their SDK, natively (a separate workspace, see workloads/README.md).
(cd workloads && cargo test --locked "$@") 2>&1 | tee -a "$log" || status=$?

# cargo ends on the last crate's doc-tests (often "0 passed"); close with the whole count.
awk '/^test result:/ { p += $4; f += $6 } END { printf "Total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
