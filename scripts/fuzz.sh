#!/usr/bin/env bash
# Long fuzz campaigns: every decoder (or the ones named), coverage-guided with atheris,
# seeded from the golden recordings. Crashers land in tests/data/fuzz/<target>/, where the
# test suite replays them. Bounded: --runs cases per target (default 1,000,000).
#   scripts/fuzz.sh                      # all targets, 1M cases each
#   scripts/fuzz.sh --runs 200000 pcap k8s
set -euo pipefail
cd "$(dirname "$0")/.."
runs=1000000
targets=()
while (($#)); do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    -h|--help) sed -n 2,6p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ -x .venv/bin/python ] || scripts/install.sh
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(.venv/bin/python -c 'from tests.fuzz.targets import NAMES; print(*NAMES, sep="\n")')
fi
failed=0
for t in "${targets[@]}"; do
  echo "== $t: $runs cases" >&2
  log=$(mktemp)
  if .venv/bin/python -m tests.fuzz.campaign "$t" --runs "$runs" >"$log" 2>&1; then
    echo "$t: $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?') cases, 0 crashes"
  else
    failed=1
    echo "$t: CRASH (see $log and tests/data/fuzz/$t/)"; tail -30 "$log" >&2
  fi
done
exit "$failed"
