"""List the demos, or regenerate every figure.

    python -m minitheory.demos                  # one line per demo
    python -m minitheory.demos --all --out DIR  # run every demo with its defaults into DIR/NAME
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

#: In the order of the papers (gradual rank increase, low rank and sparse, sparse bigrams).
DEMOS = ("rank_growth", "rank_growth_full", "rank_growth_assumptions", "lowrank_sparse",
         "sparse_bigrams", "bigram_transfer", "softmax_vs_linear", "bigram_scale")


def describe(name: str) -> str:
    """The first sentence of a demo's docstring, on one line."""
    doc = importlib.import_module(f"minitheory.demos.{name}").__doc__ or ""
    return " ".join(doc.split("\n\n")[0].split())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minitheory.demos", allow_abbrev=False,
                                     description="List the demos, or run them all.")
    parser.add_argument("--all", action="store_true", help="run every demo with its defaults")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="with --all: each demo writes to DIR/NAME (default: out)")
    parser.add_argument("--skip", nargs="*", default=None, choices=DEMOS, metavar="NAME",
                        help="with --all: demos to leave out (e.g. bigram_scale, ~2 minutes)")
    args = parser.parse_args(argv)
    given = [flag for flag, value in (("--out", args.out), ("--skip", args.skip)) if value is not None]
    if given and not args.all:
        parser.error(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only "
                     f"with --all (without it the demos are listed, not run)")
    args.out = Path("out") if args.out is None else args.out
    args.skip = args.skip or []
    if args.all:
        from ._common import check_out
        problem = check_out(str(args.out), replot=False)
        if problem:
            parser.error(problem)
    if not args.all:
        width = max(map(len, DEMOS))
        for name in DEMOS:
            print(f"{name.ljust(width)}  {describe(name)}")
        print("\nRun one with: python -m minitheory.demos.NAME [--help]")
        return 0
    todo = [name for name in DEMOS if name not in args.skip]
    t_all = time.perf_counter()
    for i, name in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {name} -> {args.out / name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        code = importlib.import_module(f"minitheory.demos.{name}").main(
            ["--out", str(args.out / name)])
        if code != 0:
            print(f"{name} failed with exit code {code}", file=sys.stderr)
            return code
        print(f"[{i}/{len(todo)}] {name} done in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
    print(f"all {len(todo)} demos done in {time.perf_counter() - t_all:.1f} s; figures in "
          f"{args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
