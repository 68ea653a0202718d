#!/usr/bin/env bash
# Retrains the demo's vibration classifier, both versions the demo uses
# (manifests/factory/models/vibration-classifier-1.0.0.onnx, which knows worn bearings and
# spikes, and -1.1.0.onnx, retrained to know slight imbalances too, which the demo rolls out):
# an hour of labelled readings from sensor-sim (seed 11; the demo runs seed 7), scikit-learn
# from PyPI in a venv, exported to ONNX. The demo uses the committed files and needs none of
# this; run it after changing the plant model or the features.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../setup.sh
. scripts/setup.sh

cargo build --locked -p edgeplane-edge-runtime --bin sensor-sim
python=$(python_venv target/venv-train scripts/models/requirements.txt)
data=$(mktemp --suffix .csv)
trap 'rm -f "$data"' EXIT
target/debug/sensor-sim --dataset "$data" --duration-s 3600 --seed 11 --rate-hz 10 --fault-every-s 15
models=manifests/factory/models
"$python" scripts/models/train_vibration_model.py "$data" "$models/vibration-classifier-1.0.0.onnx"
"$python" scripts/models/train_vibration_model.py --with-imbalance "$data" "$models/vibration-classifier-1.1.0.onnx"
