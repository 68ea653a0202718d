#!/usr/bin/env bash
# Installs what edgeplane needs on a fresh machine, and nothing twice.
# Sourced or run by the other scripts; safe to run again.
set -euo pipefail

# rustup installs cargo under ~/.cargo/bin; a non-login shell (CI) may not have it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is not installed; install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi
