#!/usr/bin/env python
"""Run the bit-keras benchmarks from a checkout: ``python benchmarks/run.py [--quick] --output DIR``.

The same as ``bit-keras bench``; the harness lives in :mod:`benchmarks.bench.harness` so that the installed
command has it too. See benchmarks/README.md.

Example:
    python benchmarks/run.py --quick --output bench-results
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.bench.harness import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
