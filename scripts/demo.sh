#!/usr/bin/env bash
# Set up everything, then run podflow's demo (a 3-node Flannel-VXLAN lab with live map).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/podflow demo "$@"
