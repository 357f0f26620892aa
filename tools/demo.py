#!/usr/bin/env python
"""The demo behind ``make demo``: generate synthetic data, train both demo configs on the CPU,
evaluate, write pictures and exported graphs under outputs/demo/, print the figures."""

from __future__ import annotations

import sys

from aehg.engine.demo import main

if __name__ == "__main__":
    sys.exit(main())
