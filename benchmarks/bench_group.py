"""Speed of aehg.group on 17×128×128 maps of well-separated synthetic people (one thread).

The people are generated here: on a grid, each a standing person (COCO's 17 parts in a fixed
layout, 0.8 of the grid cell high, each part jittered by 3 % of the cell), Gaussian parts
(sigma 2), low background noise, a dense tag map per person region (every channel) with small
noise, E = 1 or 2 (tags at least 1.5 apart). Rows: 10 and 30 people, E = 1 and 2, refinement
off and on; ``--weak`` also times people with that fraction of parts rendered weak (below the
detection threshold), so that refinement has parts to fill. ``--method`` picks the grouping
(default: aehg.group's default). Prints the median time per image over the repeats. Example::

    python benchmarks/bench_group.py --repeats 300
    python benchmarks/bench_group.py --method greedy
"""

from __future__ import annotations

import argparse
import math

import cv2
import numpy as np
import torch
from timing import median_ms  # benchmarks/timing.py, beside this script

from aehg import group
from aehg.decoding import METHODS

PARTS, SIZE, SIGMA = 17, 128, 2.0
# A standing person facing the camera (COCO's parts), x and y in units of its height, centred:
# the default grouping checks the layout of a person, so the parts must look like one.
STANDING = np.array([
    (0.0, 0.06), (0.02, 0.045), (-0.02, 0.045), (0.045, 0.055), (-0.045, 0.055),
    (0.11, 0.18), (-0.11, 0.18), (0.15, 0.36), (-0.15, 0.36), (0.16, 0.52), (-0.16, 0.52),
    (0.07, 0.53), (-0.07, 0.53), (0.075, 0.75), (-0.075, 0.75), (0.08, 0.96), (-0.08, 0.96),
]) - (0.0, 0.5)
# Targets of the issue (ms) for complete people: (people, E) → target with refinement.
TARGETS = {(10, 1): 2.0, (30, 1): 3.0, (30, 2): 5.0}


def synthetic_people(n: int, e: int, weak: float = 0.0, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (17, 128, 128) and tags (17, E, 128, 128) of n well-separated people."""
    rng = np.random.default_rng(seed)
    g = math.ceil(math.sqrt(n))
    step = SIZE / g
    cells = rng.permutation(g * g)[:n]
    centre = np.stack([(cells % g + 0.5) * step, (cells // g + 0.5) * step], 1)
    pos = centre[:, None] + (0.8 * STANDING + rng.uniform(-0.03, 0.03, (n, PARTS, 2))) * step
    pos = np.clip(pos, 0, SIZE - 1)
    side = max(2, math.ceil(n ** (1 / e)))
    lattice = np.stack(np.unravel_index(rng.choice(side ** e, n, replace=False),
                                        (side,) * e), 1)
    ptags = lattice * 1.5
    amp = np.where(rng.random((n, PARTS)) < weak, 0.05, 1.0)
    amp[:, 0] = 1.0
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    heat = rng.uniform(0, 0.02, (PARTS, SIZE, SIZE)).astype(np.float32)
    for i in range(n):  # generation only, not timed
        d2 = (xx[None] - pos[i, :, 0, None, None]) ** 2 + (yy[None] - pos[i, :, 1, None, None]) ** 2
        heat = np.maximum(heat, amp[i, :, None, None] * np.exp(-d2 / (2 * SIGMA ** 2)))
    owner = np.argmin((xx[None] - centre[:, 0, None, None]) ** 2
                      + (yy[None] - centre[:, 1, None, None]) ** 2, 0)
    tags = ptags[owner].transpose(2, 0, 1)[None] + rng.normal(0, 0.05, (PARTS, e, SIZE, SIZE))
    return heat.astype(np.float32), tags.astype(np.float32)




def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--weak", type=float, default=0.2,
                    help="fraction of weak parts in the extra rows (0 disables them)")
    ap.add_argument("--torch", action="store_true", help="pass CPU tensors instead of numpy")
    ap.add_argument("--method", choices=METHODS, default=METHODS[0])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # aehg's NMS dilates with OpenCV
    m = args.method
    print(f"aehg.group method {m} | maps {PARTS}x{SIZE}x{SIZE} | threads "
          f"{torch.get_num_threads()} torch, {cv2.getNumThreads()} OpenCV | median of "
          f"{args.repeats} | input "
          f"{'torch' if args.torch else 'numpy'}")
    print(f"{'people':>6} {'E':>2} {'weak':>5} {'refine':>6} {'found':>5} {'ms':>7} "
          f"{'target':>7}")
    for weak in (0.0, args.weak) if args.weak > 0 else (0.0,):
        for n in (10, 30):
            for e in (1, 2):
                heat, tags = synthetic_people(n, e, weak)
                tags_in = tags[:, 0] if e == 1 else tags
                if args.torch:
                    heat, tags_in = torch.from_numpy(heat), torch.from_numpy(tags_in)
                for refine in (False, True):
                    found = len(group(heat, tags_in, refine=refine, method=m))
                    ms = median_ms(lambda h=heat, t=tags_in, r=refine: group(h, t, refine=r,
                                                                             method=m),
                                   args.repeats, args.warmup)
                    target = TARGETS.get((n, e)) if refine and weak == 0 else None
                    tgt = f"<= {target:g}" if target else ""
                    print(f"{n:>6} {e:>2} {weak:>5.2f} {str(refine):>6} {found:>5} {ms:>7.2f} "
                          f"{tgt:>7}")


if __name__ == "__main__":
    main()
