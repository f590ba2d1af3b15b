"""Every figure issue 14 sets a target for, in one run, as ratios (docs/performance.md):

    .venv/bin/python bench/run.py [--events 1000000] [--customers 1000]

runs bench/ingest.py (batch against raw COPY, replays, single events against the bare view served
by the same server, CPU per request, paced p99, current usage at --events) and then bench/close.py
(the period close against one raw GROUP BY over the same events), each printing its own phases,
and ends with one table of both. About 20 minutes at the default sizes.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ingest import print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the ingestion phases")
    parser.add_argument("--customers", type=int, default=1000, help="customers closed")
    parser.add_argument("--events-per-customer", type=int, default=10_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for script, options in (
            ("ingest.py", ["--events", str(args.events)]),
            (
                "close.py",
                ["--customers", str(args.customers), "--events-per-customer", str(args.events_per_customer)],
            ),
        ):
            figures = Path(scratch) / f"{script}.json"
            print(f"\n=== {script} {' '.join(options)}", flush=True)
            subprocess.run([sys.executable, str(HERE / script), *options, "--json", str(figures)], check=True)
            rows += json.loads(figures.read_text())
    print("\n=== issue 14's targets, one run")
    print_table(rows)


if __name__ == "__main__":
    main()
