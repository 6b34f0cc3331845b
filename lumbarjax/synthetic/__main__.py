"""Command line of the synthetic demo cohort: ``python -m lumbarjax.synthetic --out demo --n 160``.

Writes a cohort with :func:`lumbarjax.synthetic.make_cohort` and prints its summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from lumbarjax import synthetic
from lumbarjax.synthetic import OUTCOME_REGIMES, make_cohort


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lumbarjax.synthetic", description=synthetic.__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="cohort folder to write")
    ap.add_argument("--n", type=int, default=160, help="number of patients")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--xray-size", type=int, nargs=2, default=(384, 320), metavar=("ROWS", "COLS"))
    ap.add_argument("--mri-size", type=int, nargs=2, default=(176, 176), metavar=("ROWS", "COLS"))
    ap.add_argument("--regime", default="demo", choices=sorted(OUTCOME_REGIMES),
                    help="effect sizes of the outcome model (docs/DEMO_COHORT.md)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    s = make_cohort(args.out, args.n, args.seed, xray_size=args.xray_size, mri_size=args.mri_size,
                    overwrite=args.overwrite, regime=args.regime)
    s.pop("files")
    print(json.dumps(s, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
