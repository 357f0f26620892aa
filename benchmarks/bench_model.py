"""Forward and forward+backward throughput of the stacked hourglass.

Prints images/s (median over repeats) for each early-exit stack count, with and without
``channels_last``. Examples::

    python benchmarks/bench_model.py --stacks 2 --channels 128 --size 256 --batch 4
    python benchmarks/bench_model.py --preset ae --size 256 --batch 1
    python benchmarks/bench_model.py --preset mpii --size 256 --batch 4   # 8-stack MPII network
    python benchmarks/bench_model.py --config configs/demo_pose.yaml
"""

from __future__ import annotations

import argparse

import torch
from timing import median_ms  # benchmarks/timing.py, beside this script

from aehg.config import ModelConfig, load_config
from aehg.models import build_model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="YAML config whose model section is benchmarked")
    ap.add_argument("--preset", choices=["ae", "mpii"], help="ae: the original AE network "
                    "(4 stacks, 256 ch, increase 128, conv blocks); mpii: the 2016 paper's "
                    "8-stack single-person network (configs/mpii_hourglass.yaml: residual, "
                    "256 ch, 16 joints, no tags)")
    ap.add_argument("--stacks", type=int, default=2)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--increase", type=int, default=0)
    ap.add_argument("--block", choices=["residual", "conv"], default="residual")
    ap.add_argument("--classes", type=int, default=17)
    ap.add_argument("--size", type=int, default=256, help="input height and width")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.config:
        cfg = load_config(args.config).model
    elif args.preset == "mpii":
        cfg = ModelConfig(num_stacks=8, channels=256, depth=4, increase=0, block="residual",
                          num_classes=16, embedding_dim=0)
    elif args.preset == "ae":
        cfg = ModelConfig(num_stacks=4, channels=256, depth=4, increase=128, block="conv",
                          num_classes=17, embedding_dim=1)
    else:
        cfg = ModelConfig(num_stacks=args.stacks, channels=args.channels, depth=args.depth,
                          increase=args.increase, block=args.block, num_classes=args.classes)
    torch.manual_seed(0)
    model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {cfg}")
    print(f"parameters: {n_params / 1e6:.2f} M | input {args.batch}x3x{args.size}x{args.size} "
          f"| threads {torch.get_num_threads()} | median of {args.repeats}")
    print(f"{'stacks':>6} {'layout':>14} {'fwd img/s':>10} {'fwd+bwd img/s':>14}")
    x = torch.randn(args.batch, 3, args.size, args.size)
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt)
        for k in range(1, cfg.num_stacks + 1):
            def fwd(k=k, model=model, xi=xi):
                model.eval()
                with torch.inference_mode():
                    model(xi, stacks=k)

            def fwd_bwd(k=k, model=model, xi=xi):
                model.train()
                outs = model(xi, stacks=k)
                # A model without tags (E = 0) has an empty tag tensor: no tag term.
                loss = sum(o.objects.heatmaps.square().mean() + (o.objects.tags.square().mean()
                           if o.objects.tags.numel() else 0) for o in outs)
                loss.backward()
                model.zero_grad(set_to_none=True)

            tf = median_ms(fwd, args.repeats, args.warmup) / 1e3
            tb = median_ms(fwd_bwd, args.repeats, args.warmup) / 1e3
            layout = "channels_last" if channels_last else "contiguous"
            print(f"{k:>6} {layout:>14} {args.batch / tf:>10.2f} {args.batch / tb:>14.2f}")


if __name__ == "__main__":
    main()
