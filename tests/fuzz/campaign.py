"""A long, coverage-guided fuzz campaign of one target with atheris (libFuzzer for Python).

Run by ``scripts/fuzz.sh``; one target per process (libFuzzer owns the process). The seeds
and saved crashers start a working corpus in ``$TMPDIR/podflow-fuzz/<target>/`` (kept
between campaigns), the podflow modules are instrumented for coverage, and a crasher is
saved under ``tests/data/fuzz/<target>/`` where the test suite replays it.

Usage::

    .venv/bin/python -m tests.fuzz.campaign ctnetlink --runs 1000000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> None:
    """Parse arguments and hand the process to libFuzzer."""
    import atheris

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target")
    ap.add_argument("--runs", type=int, default=1_000_000, help="cases to run (default 1M)")
    ap.add_argument("--max-len", type=int, default=4096, help="largest input in bytes")
    ap.add_argument("--seconds", type=int, default=0, help="stop after this long (0: never)")
    ap.add_argument("--fresh", action="store_true",
                    help="start from the seeds only (forget the kept working corpus)")
    args = ap.parse_args()

    with atheris.instrument_imports(include=["podflow"]):
        from tests.fuzz.targets import CRASHERS, crashers, load

        target = load(args.target)
    # one working corpus per target, kept between campaigns (what libFuzzer found new
    # coverage with is the best start for the next run); --fresh starts it again
    corpus = Path(tempfile.gettempdir()) / "podflow-fuzz" / target.name
    if args.fresh:
        shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    for path in crashers(target.name):  # old crashers are good starting points too
        (corpus / f"crasher-{path.name}").write_bytes(path.read_bytes())
    out = CRASHERS / target.name
    out.mkdir(parents=True, exist_ok=True)

    def one(data: bytes) -> None:
        target.run(data)

    argv = [sys.argv[0], f"-runs={args.runs}", f"-max_len={args.max_len}",
            f"-artifact_prefix={out}/", "-print_final_stats=1", "-rss_limit_mb=4096",
            str(corpus)]
    if args.seconds:
        argv.append(f"-max_total_time={args.seconds}")
    atheris.Setup(argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
