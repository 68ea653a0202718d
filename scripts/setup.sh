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

# mosquitto's path on Debian; a non-login shell may not have /usr/sbin on PATH.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
# From Debian's packages: mosquitto (the MQTT broker the data-plane tests, the demo and the
# benchmarks start) and its clients (mosquitto_pub); curl and jq, which the demo reads the
# nodes' JSON with.
packages=()
command -v mosquitto >/dev/null 2>&1 || packages+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || packages+=(mosquitto-clients)
command -v curl >/dev/null 2>&1 || packages+=(curl ca-certificates)
command -v jq >/dev/null 2>&1 || packages+=(jq)
if [ "${#packages[@]}" -gt 0 ]; then
    apt=(apt-get)
    if [ "$(id -u)" -ne 0 ]; then
        apt=(sudo apt-get)
    fi
    echo "setup: installing ${packages[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing or stale on a fresh machine: refresh and retry once.
    if ! "${apt[@]}" install -y --no-install-recommends "${packages[@]}"; then
        "${apt[@]}" update
        "${apt[@]}" install -y --no-install-recommends "${packages[@]}"
    fi
fi
