"""Run the benchmarks: `python -m bench` runs all, `python -m bench knowledge memory` some."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """Import each `bench/<name>_bench.py` asked for (all by default) and call its `main()`."""
    found = sorted(
        info.name.removesuffix("_bench")
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if info.name.endswith("_bench")
    )
    wanted = argv or found
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(found)}")
        return 2
    for name in wanted:
        module = importlib.import_module(f"bench.{name}_bench")
        started = time.perf_counter()
        print(f"== {name}")
        module.main()
        print(f"== {name} done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
