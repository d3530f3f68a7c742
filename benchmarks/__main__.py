"""Run every benchmark and regenerate the summary table (benchmarks/RESULTS.md and the README).

Run: python -m benchmarks [--quick] [--only health,ack,...]
Each `benchmarks/*_bench.py` runs in its own process and prints its figures; lines of the form
`SUMMARY<TAB>what<TAB>figure` are gathered into one table with the machine it ran on. With
`--only`, the named benchmarks' rows are replaced and the others' kept, each row saying when it
was measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
README = REPO / "README.md"
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def machine() -> str:
    """Describe the machine: CPU, cores, memory, Python."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        found = re.search(r"^MemTotal:\s*(\d+)", meminfo.read_text(), re.MULTILINE)
        memory = f", {int(found.group(1)) / 1024 / 1024:.0f} GiB" if found else ""
    return f"{cpu}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}, {platform.system()}"


def run_one(path: Path, quick: bool) -> tuple[list[tuple[str, str]], int]:
    """Run one benchmark, echoing its output; return its SUMMARY rows and exit code."""
    command = [sys.executable, "-m", f"benchmarks.{path.stem}", *(["--quick"] if quick else [])]
    print(f"\n=== {path.stem} ===", flush=True)
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    rows: list[tuple[str, str]] = []
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("SUMMARY\t"):
            _, what, figure = line.rstrip("\n").split("\t", 2)
            rows.append((what, figure))
        else:
            print(line, end="", flush=True)
    return rows, process.wait()


Row = tuple[str, str, str, str]  # benchmark, what, figure, when measured


def table(rows: list[Row]) -> str:
    """Write the rows as a Markdown table."""
    lines = ["| benchmark | what | figure | measured |", "| --- | --- | --- | --- |"]
    # A | inside a cell would end it: Markdown wants it escaped.
    lines += ["| " + " | ".join(cell.replace("|", r"\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def kept_rows(text: str) -> list[Row]:
    """Read the rows of an earlier table (RESULTS.md), with when each was measured.

    A table from before the `measured` column takes the date of its `Measured` line.
    """
    found = re.search(r"^Measured (\d{4}-\d{2}-\d{2})", text, re.MULTILINE)
    default = found.group(1) if found else "unknown"
    rows: list[Row] = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith(("| benchmark ", "| ---")):
            continue
        cells = [cell.strip().replace(r"\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 3:
            cells.append(default)
        if len(cells) == 4:
            rows.append((cells[0], cells[1], cells[2], cells[3]))
    return rows


def main() -> int:
    """Run the benchmarks, print the table, write RESULTS.md and update the README's section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer rounds")
    parser.add_argument("--only", help="comma-separated names, e.g. health,ack")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    rows: list[Row] = []
    failed = []
    for path in sorted(HERE.glob("*_bench.py")):
        name = path.stem.removesuffix("_bench")
        if wanted and name not in wanted:
            continue
        found, code = run_one(path, args.quick)
        rows += [(name, what, figure, day) for what, figure in found]
        if code != 0:
            failed.append(name)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    size = "quick sizes" if args.quick else "full sizes"
    ran = "every benchmark"
    if wanted is not None:
        ran = f"{', '.join(sorted(wanted))} now, the other rows on the day they say"
    if wanted is not None and RESULTS.exists():
        # The benchmarks not run now keep their last figures, in the order of the table.
        earlier = [row for row in kept_rows(RESULTS.read_text()) if row[0] not in {r[0] for r in rows}]
        order = [path.stem.removesuffix("_bench") for path in sorted(HERE.glob("*_bench.py"))]
        rows = sorted(earlier + rows, key=lambda row: order.index(row[0]) if row[0] in order else len(order))
    body = f"Measured {stamp} ({size}, {ran}) on {machine()}.\n\n{table(rows)}\n"
    if failed:
        body += f"\nFailed to finish: {', '.join(failed)}.\n"
    print("\n" + body)
    RESULTS.write_text(f"# Benchmark results\n\nRegenerated by `python -m benchmarks`.\n\n{body}")
    if not args.quick and README.exists():
        text = README.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            _, tail = rest.split(END, 1)
            README.write_text(f"{head}{START}\n{body}{END}{tail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
