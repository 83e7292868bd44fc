#!/usr/bin/env bash
# Set up everything, then run the whole test suite: lint, types, unit tests and, as root,
# the integration tests on real network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/ruff check podflow tests bench
.venv/bin/mypy
set +e
.venv/bin/pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "podflow: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
