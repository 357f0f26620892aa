"""Speed of aehg.group on 17×128×128 maps of well-separated synthetic people (one thread).

The people are generated here: Gaussian parts (sigma 2) on a grid, low background noise, a
dense tag map per person region (every channel) with small noise, E = 1 or 2 (tags at least
1.5 apart). Rows: 10 and 30 people, E = 1 and 2, refinement off and on; ``--weak`` also times
people with that fraction of parts rendered weak (below the detection threshold), so that
refinement has parts to fill. Prints the median time per image over the repeats. Example::

    python benchmarks/bench_group.py --repeats 300
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from timing import median_ms  # benchmarks/timing.py, beside this script

from aehg import group

PARTS, SIZE, SIGMA = 17, 128, 2.0
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
    pos = centre[:, None] + rng.uniform(-0.3, 0.3, (n, PARTS, 2)) * step
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
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"aehg.group | maps {PARTS}x{SIZE}x{SIZE} | threads {torch.get_num_threads()} | "
          f"median of {args.repeats} | input {'torch' if args.torch else 'numpy'}")
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
                    found = len(group(heat, tags_in, refine=refine))
                    ms = median_ms(lambda h=heat, t=tags_in, r=refine: group(h, t, refine=r),
                                    args.repeats, args.warmup)
                    target = TARGETS.get((n, e)) if refine and weak == 0 else None
                    tgt = f"<= {target:g}" if target else ""
                    print(f"{n:>6} {e:>2} {weak:>5.2f} {str(refine):>6} {found:>5} {ms:>7.2f} "
                          f"{tgt:>7}")


if __name__ == "__main__":
    main()
