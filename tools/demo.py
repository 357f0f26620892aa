#!/usr/bin/env python
"""The demo behind ``make demo``: generate synthetic data, train both demo configs on the CPU,
evaluate, write pictures (drawings and an ``overview.png`` sheet) and exported graphs under
outputs/demo/, and end by printing the figures, the time taken and where those files are."""

from __future__ import annotations

import sys

from aehg.engine.demo import main

if __name__ == "__main__":
    sys.exit(main())
