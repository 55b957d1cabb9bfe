"""Both real-data quality benchmarks in one command: τ-bench airline, then Who&When group chats.

    .venv/bin/python benchmarks/quality/real_data.py

Prints each benchmark's tables (see ``tau_bench.py`` and ``who_and_when.py``
for the conversions and the labels derived from the data); exits non-zero if
either one does.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tau_bench
import who_and_when


def main() -> int:
    status = tau_bench.main([])
    status |= who_and_when.main([])
    return status


if __name__ == "__main__":
    sys.exit(main())
