"""Run the benchmarks and print one table: each figure, its ceiling from the
same run, the ratio and the target.

``python -m bench`` runs them all (``make bench``); ``--only`` picks some,
``--quick`` shrinks every input for a trial run, whose figures mean little.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import Row, Section

# In the order they run and print.
BENCHMARKS = ("validation", "creation", "notifier", "scan")


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({model}), {pages / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, load average {load}"
    )


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| path | figure | value | ceiling in the same run | value | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sign = "≤" if row.at_most else "≥"
        verdict = "" if row.met else " (missed)"
        lines.append(
            f"| {row.path} | {row.figure} | {row.value:,.1f} | {row.ceiling} "
            f"| {row.ceiling_value:,.1f} | {row.ratio:.2f}{verdict} "
            f"| {sign} {row.target} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS,
        default=list(BENCHMARKS),
        help="the benchmarks to run",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shrink every input, for a trial run of the benchmark code",
    )
    arguments = parser.parse_args()
    started = time.monotonic()
    sections: list[Section] = []
    failed: list[str] = []
    for name in arguments.only:
        module = importlib.import_module(f"bench.{name}")
        run: Callable[[bool], Section] = module.run
        print(f"running {name} ...", flush=True)
        try:
            sections.append(run(arguments.quick))
        except Exception:
            # The other benchmarks' figures are still worth printing.
            traceback.print_exc()
            failed.append(name)

    print(f"\nmachine: {machine()}")
    print(f"took {time.monotonic() - started:.0f} s\n")
    print("\n".join(table([row for s in sections for row in s.rows])))
    print("\nlatency")
    for section in sections:
        for line in section.details:
            print(f"  {line}")
    print("\nwhen the input grows tenfold")
    for section in sections:
        for line in section.growth:
            print(f"  {line}")
    peaks: dict[str, int] = {}
    for section in sections:
        for label, kib in section.memory.items():
            service = label.split(".", 1)[0]
            peaks[service] = max(peaks.get(service, 0), kib)
    print("\npeak resident memory per service process (largest over all runs)")
    for service, kib in sorted(peaks.items()):
        print(f"  {service:<10} {kib / 1024:7.1f} MiB")
    if failed:
        sys.exit(f"\nfailed: {', '.join(failed)} (traceback above)")


if __name__ == "__main__":
    main()
