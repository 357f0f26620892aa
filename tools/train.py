#!/usr/bin/env python
"""Train a model: ``python tools/train.py --config CONFIG [key=value ...]``.

Several processes (GPUs or CPU gloo): ``torchrun --nproc_per_node=N tools/train.py ...``.
"""

from __future__ import annotations

import sys

from aehg.engine.trainer import main

if __name__ == "__main__":
    sys.exit(main())
