#!/usr/bin/env bash
# Builds the WebAssembly workloads (workloads/) and copies each module to
# target/workloads/<name>.wasm. Callable from anywhere; cargo skips the work if nothing changed.
#
# Toolchain: rustup's, if it has the wasm32-unknown-unknown target; otherwise Debian's Rust
# (rustc, cargo and libstd-rust-dev-wasm32 from apt, Rust 1.63), installed if missing. The
# workloads are written to build with either.
set -euo pipefail
cd "$(dirname "$0")/.."

target=wasm32-unknown-unknown
modules=(threshold-filter window-aggregator anomaly-detector ts-compressor onnx-inference)

# rustup installs cargo under ~/.cargo/bin; a non-login shell (CI) may not have it on PATH.
if ! command -v rustup >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

# rustc's /usr/bin/rust-lld is a symlink to lld-14, which Debian only recommends: install it
# too, or linking wasm32 fails with "linker `rust-lld` not found".
debian_ready() {
    [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && [ -d "/usr/lib/rustlib/$target" ] &&
        [ -x /usr/bin/rust-lld ]
}

if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    cargo=(cargo)
else
    if ! debian_ready; then
        apt=(apt-get)
        if [ "$(id -u)" -ne 0 ]; then
            apt=(sudo apt-get)
        fi
        packages=(rustc cargo libstd-rust-dev-wasm32 lld-14)
        echo "build-workloads: installing ${packages[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        # The package lists may be missing or stale on a fresh machine: refresh and retry once.
        if ! "${apt[@]}" install -y --no-install-recommends "${packages[@]}"; then
            "${apt[@]}" update
            "${apt[@]}" install -y --no-install-recommends "${packages[@]}"
        fi
    fi
    # Debian's cargo with Debian's rustc: rustup's rustc (first on PATH) has no wasm32 std here.
    cargo=(env RUSTC=/usr/bin/rustc /usr/bin/cargo)
fi

# Wasm features every wasmtime we run enables (and Rust 1.63's LLVM emits): float-to-int casts
# without a range check and branch each (nontrapping-fptoint), memory.copy and memory.fill for
# memcpy and memset instead of byte loops (bulk-memory), sign extension in one instruction.
# Measured side by side (cargo bench --bench wasm): the anomaly detector went from 0.58-0.60 of
# native to 0.77-0.84 and the compressor from 0.74 to 0.77-0.87. simd128 was measured too and
# left out: LLVM's vectorised loops ran slower under Cranelift (the compressor at 0.67).
# Set here rather than in workloads/.cargo, which cargo does not read when run from the
# repository root.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+nontrapping-fptoint,+bulk-memory,+sign-ext"
"${cargo[@]}" build --manifest-path workloads/Cargo.toml --release --target "$target" --locked

mkdir -p target/workloads
for module in "${modules[@]}"; do
    built="workloads/target/$target/release/edgeplane_${module//-/_}.wasm"
    cp "$built" "target/workloads/$module.wasm"
    printf '%-40s %8d bytes\n' "target/workloads/$module.wasm" "$(wc -c <"target/workloads/$module.wasm")"
done
