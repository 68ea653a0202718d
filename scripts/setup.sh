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
# nodes' JSON with; kubectl; prometheus; chromium; etcd.
packages=()
command -v mosquitto >/dev/null 2>&1 || packages+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || packages+=(mosquitto-clients)
command -v curl >/dev/null 2>&1 || packages+=(curl ca-certificates)
command -v jq >/dev/null 2>&1 || packages+=(jq)
# kubectl, which the tests run against the orchestrators (preinstalled on most machines).
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
# Prometheus and promtool: the monitoring tests check every /metrics page and the shipped
# alerting rules with promtool, and scrape a cluster with a real server.
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || packages+=(prometheus)
# Chromium and its WebDriver server: the console tests drive a real headless browser.
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
# etcd: scripts/bench.sh runs the same write load against a 3-member etcd cluster.
command -v etcd >/dev/null 2>&1 || packages+=(etcd-server)
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

# A Python venv with the packages of a requirements file (from PyPI), made once and reused:
# prints its python, as an absolute path (tests run it from their own directories). Used for ONNX Runtime, the reference the inference tests and benchmarks
# compare the edge with. Debian's python3 needs python3-venv for this; installed if missing.
python_venv() {
    local dir=$1 requirements=$2
    case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
    if [ -x "$dir/bin/python" ] && [ -f "$dir/.installed" ] && cmp -s "$requirements" "$dir/.installed"; then
        echo "$dir/bin/python"
        return
    fi
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        local apt=(apt-get)
        [ "$(id -u)" -eq 0 ] || apt=(sudo apt-get)
        echo "setup: installing python3-venv with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends python3-venv python3-pip >&2 ||
            { "${apt[@]}" update >&2 && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends python3-venv python3-pip >&2; }
    fi
    rm -rf "$dir"
    python3 -m venv "$dir" >&2
    echo "setup: installing the Python packages of $requirements into $dir" >&2
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$dir/.installed"
    echo "$dir/bin/python"
}
