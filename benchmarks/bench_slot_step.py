"""Time of one training step with and without slots (docs/design.md "Slots").

The model of ``configs/demo_graph.yaml`` (2 stacks, 64 channels, 128 input, 32×32 maps, 4
classes, 3 predicates, E = 8, boxes, focal heatmaps) with 1/1 slots and with ``--slots``
(3/6 by default), on the same batch of ``--batch`` synthetic scenes (5 objects, two of them
sharing a centre, 4 relations including a reverse pair, built by
:func:`aehg.data.build_targets`). One step = forward, :class:`aehg.models.MultiStackLoss`,
backward, Adam update; also timed alone: the loss forward and backward on fixed maps. Prints
the median over ``--repeats`` runs per setting, measured alternately in one process so that
the ratio is fair on a shared machine.

Example::

    python benchmarks/bench_slot_step.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from aehg.config import load_config
from aehg.data.loader import collate
from aehg.data.targets import build_targets
from aehg.models import MultiStackLoss, build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _batch(cfg, so: int, sr: int, b: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    size, c, r = cfg.data.output_size, cfg.model.num_classes, cfg.model.num_link_classes
    samples = []
    for _ in range(b):
        n = 5
        cent = rng.uniform(2, size - 2, (n, 2))
        cent[1] = cent[0]
        lab = rng.integers(0, c, n)
        parts = np.zeros((n, c, 3))
        parts[np.arange(n), lab, :2] = cent
        parts[np.arange(n), lab, 2] = 1
        wh = rng.uniform(2, 8, (n, 2))
        links = np.array([[0, 2, 0], [2, 0, 1], [1, 3, 2], [3, 4, 0]]) % [n, n, r]
        t, _ = build_targets(parts, (size, size), sigma=cfg.data.sigma,
                             max_instances=cfg.data.max_instances, tag_per_class=False,
                             boxes=np.concatenate([cent - wh / 2, cent + wh / 2], 1),
                             links=links, num_link_classes=r, max_links=cfg.data.max_links,
                             object_slots=so, relation_slots=sr)
        samples.append({k: torch.as_tensor(v) for k, v in t.items()})
    return collate(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo_graph.yaml")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slots", default="3x6", help="object x relation slots")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    so, sr = (int(v) for v in args.slots.lower().split("x"))
    size = cfg.data.input_size
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    loss_fn = MultiStackLoss(cfg.loss)
    runs = {}
    for spec in ((1, 1), (so, sr)):
        torch.manual_seed(0)
        cfg.model.object_slots, cfg.model.relation_slots = spec
        model = build_model(cfg.model).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batch = _batch(cfg, *spec, args.batch, 0)

        def step(model=model, opt=opt, batch=batch) -> None:
            opt.zero_grad(set_to_none=True)
            total, _ = loss_fn(model(x), batch)
            total.backward()
            opt.step()

        with torch.no_grad():
            maps = [o.map_tensors(lambda t: t.detach()) for o in model(x)]

        def loss_only(maps=maps, batch=batch) -> None:
            leaves = [o.map_tensors(lambda t: t.requires_grad_(True)) for o in maps]
            total, _ = loss_fn(leaves, batch)
            total.backward()

        runs[spec] = step
        runs[(spec, "loss")] = loss_only
    times: dict = {k: [] for k in runs}
    for _ in range(args.repeats):                  # alternate: same machine load for both
        for key, fn in runs.items():
            times[key].append(median_ms(fn, repeats=1, warmup=0 if times[key] else 1))
    print(f"{args.config.name}: batch {args.batch}, input {size}, output "
          f"{cfg.data.output_size}, {args.threads} thread(s), median of {args.repeats} steps")
    for what, suffix in (("step", ()), ("loss fwd+bwd", ("loss",))):
        base = float(np.median(times[((1, 1), *suffix) if suffix else (1, 1)]))
        for spec in ((1, 1), (so, sr)):
            med = float(np.median(times[(spec, *suffix) if suffix else spec]))
            print(f"  slots {spec[0]}x{spec[1]} {what:>12}: {med:8.1f} ms  "
                  f"({med / base:.2f}x of 1x1)")


if __name__ == "__main__":
    main()
