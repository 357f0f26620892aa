"""Speed of the losses: AE grouping loss (and the full multi-stack loss) forward and backward.

Batch 8, 17 parts, 128×128 maps, 30 instances with partly invisible parts, E = 1 and E = 2, one
thread. Prints the median time over repeats. Targets (issue 4): AE loss forward ≤ 0.5 ms and
forward + backward ≤ 2 ms for E = 1. The full loss is timed with eager and with deferred
(training) index checks.

Usage:
    python benchmarks/bench_loss.py [--repeats 200]
"""

from __future__ import annotations

import argparse

import torch
from timing import median_ms  # benchmarks/timing.py, beside this script

from aehg.config import LossConfig
from aehg.models import InteractionMaps, ObjectMaps, StackOutput
from aehg.models.losses import MultiStackLoss, ae_loss


def _parts(b: int, n: int, c: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    index = torch.arange(c)[None, None, :] * h * w + torch.randint(0, h * w, (b, n, c),
                                                                   generator=gen)
    visible = (torch.rand(b, n, c, generator=gen) < 0.6).long()
    return torch.stack([index * visible, visible], dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    b, c, h, w, n = 8, 17, 128, 128, 30
    gen = torch.Generator().manual_seed(0)
    parts = _parts(b, n, c, h, w, gen)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {b}, "
          f"parts {c}, maps {h}x{w}, instances {n}, median over {args.repeats} repeats")
    for e in (1, 2):
        tags = torch.randn(b, c, e, h, w, generator=gen, requires_grad=True)

        def forward(tags: torch.Tensor = tags) -> None:
            ae_loss(tags, parts)          # builds the autograd graph, as in training

        def forward_no_grad(tags: torch.Tensor = tags) -> None:
            with torch.no_grad():
                ae_loss(tags, parts)

        def forward_backward(tags: torch.Tensor = tags) -> None:
            tags.grad = None
            push, pull = ae_loss(tags, parts)
            (push.mean() + pull.mean()).backward()

        print(f"ae_loss E={e}: forward {median_ms(forward, args.repeats):.3f} ms "
              f"(no_grad {median_ms(forward_no_grad, args.repeats):.3f} ms), "
              f"forward+backward {median_ms(forward_backward, args.repeats):.3f} ms")

    # The whole per-step loss of a 2-stack pose model with links and boxes (E = 1), for scale.
    r, links_per_image, e = 5, 20, 1
    outputs = []
    for _ in range(2):
        obj = ObjectMaps(heatmaps=torch.rand(b, c, h, w, requires_grad=True),
                         tags=torch.randn(b, c, e, h, w, requires_grad=True),
                         sizes=torch.rand(b, 2, h, w, requires_grad=True))
        inter = InteractionMaps(heatmaps=torch.rand(b, r, h, w, requires_grad=True),
                                src=torch.randn(b, e, h, w, requires_grad=True),
                                dst=torch.randn(b, e, h, w, requires_grad=True))
        outputs.append(StackOutput(objects=obj, interactions=inter))
    links = torch.stack([torch.randint(0, h * w, (b, links_per_image), generator=gen),
                         torch.randint(0, n, (b, links_per_image), generator=gen),
                         torch.randint(0, n, (b, links_per_image), generator=gen),
                         torch.randint(0, r, (b, links_per_image), generator=gen),
                         torch.ones(b, links_per_image, dtype=torch.long)], dim=-1)
    batch = {"heatmaps": torch.rand(b, c, h, w), "mask": torch.ones(b, h, w), "parts": parts,
             "link_heatmaps": torch.rand(b, r, h, w), "links": links,
             "box_index": torch.stack([torch.randint(0, h * w, (b, n), generator=gen),
                                       torch.ones(b, n, dtype=torch.long)], dim=-1),
             "box_size": torch.rand(b, n, 2) * 20}
    # Deferred index checks (as in training) read nothing from the device; eager ones read
    # one flag per call.
    for kind, defer in (("mse", False), ("mse", True), ("focal", False), ("focal", True)):
        loss_fn = MultiStackLoss(LossConfig(heatmap=kind), defer_checks=defer)

        def full(loss_fn: MultiStackLoss = loss_fn) -> None:
            for out in outputs:
                for t in (out.objects.heatmaps, out.objects.tags, out.objects.sizes,
                          out.interactions.heatmaps, out.interactions.src,
                          out.interactions.dst):
                    t.grad = None
            total, _ = loss_fn(outputs, batch)
            total.backward()

        print(f"MultiStackLoss ({kind}, 2 stacks, R={r}, boxes, E=1, "
              f"{'deferred' if defer else 'eager'} checks): forward+backward "
              f"{median_ms(full, max(args.repeats // 10, 5)):.3f} ms")


if __name__ == "__main__":
    main()
