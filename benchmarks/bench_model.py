"""Forward and forward+backward throughput of the stacked hourglass.

Prints images/s (median over repeats) for each early-exit stack count, with and without
``channels_last``. Examples::

    python benchmarks/bench_model.py --stacks 2 --channels 128 --size 256 --batch 4
    python benchmarks/bench_model.py --preset ae --size 256 --batch 1
    python benchmarks/bench_model.py --preset mpii --size 256 --batch 4   # 8-stack MPII network
    python benchmarks/bench_model.py --config configs/demo_pose.yaml
    python benchmarks/bench_model.py --compare --threads 2 --repeats 5   # against the 2016 net

``--compare`` runs, interleaved in one process, a plain PyTorch re-statement of the 2016
stacked hourglass (``PlainPoseNet`` below, the widths of ``PoseNet(2, 256, 16)``: bias on every
conv, BN after the stem conv and the 1×1 feature conv, pre-activation residuals with a 1×1
skip conv only when the width changes) and aehg's network of the same widths (2 stacks, 256
channels, depth 4, residual blocks, 16 heatmaps, no tags), contiguous and channels_last. It
prints eval-forward and training images/s (training step = forward, MSE on every stack,
backward, Adam step) and the ratios to the plain network; ``--profile`` adds the top operators
of one training step of each (torch.profiler).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from timing import median_ms  # benchmarks/timing.py, beside this script
from torch import nn

from aehg.config import ModelConfig, load_config
from aehg.models import build_model

# --------------------------------------------------------------------------- the 2016 network


class _ConvBnRelu(nn.Sequential):
    """conv (bias) → optional BN → optional ReLU, the 2016 code's basic layer."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, bn: bool = False,
                 relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class _PlainResidual(nn.Module):
    """BN-ReLU-conv1×1 (out/2), BN-ReLU-conv3×3, BN-ReLU-conv1×1 (out), convs with bias; the
    skip is a 1×1 conv only when the width changes."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, cout, 1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        out += x if self.skip is None else self.skip(x)
        return out


class _PlainHourglass(nn.Module):
    def __init__(self, depth: int, ch: int) -> None:
        super().__init__()
        self.up1 = _PlainResidual(ch, ch)
        self.low1 = _PlainResidual(ch, ch)
        self.low2 = _PlainHourglass(depth - 1, ch) if depth > 1 else _PlainResidual(ch, ch)
        self.low3 = _PlainResidual(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low3(self.low2(self.low1(nn.functional.max_pool2d(x, 2, 2))))
        return self.up1(x) + nn.functional.interpolate(low, scale_factor=2, mode="nearest")


class PlainPoseNet(nn.Module):
    """The 2016 stacked hourglass at ``PoseNet(stacks, channels, parts)``'s widths.

    Shapes:
        x: (B, 3, H, W) → (B, stacks, parts, H / 4, W / 4)
    """

    def __init__(self, stacks: int = 2, channels: int = 256, parts: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _ConvBnRelu(3, 64, 7, 2, bn=True), _PlainResidual(64, 128), nn.MaxPool2d(2, 2),
            _PlainResidual(128, 128), _PlainResidual(128, channels))
        self.hourglasses = nn.ModuleList(_PlainHourglass(4, channels) for _ in range(stacks))
        self.features = nn.ModuleList(
            nn.Sequential(_PlainResidual(channels, channels),
                          _ConvBnRelu(channels, channels, 1, bn=True))
            for _ in range(stacks))
        self.outs = nn.ModuleList(nn.Conv2d(channels, parts, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1)
                                            for _ in range(stacks - 1))
        self.merge_preds = nn.ModuleList(nn.Conv2d(parts, channels, 1) for _ in range(stacks - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        preds = []
        for i, (hg, feat, out) in enumerate(zip(self.hourglasses, self.features, self.outs,
                                                strict=True)):
            f = feat(hg(x))
            p = out(f)
            preds.append(p)
            if i < len(self.merge_preds):
                x = x + self.merge_preds[i](p) + self.merge_features[i](f)
        return torch.stack(preds, 1)


def _heat(out: object) -> torch.Tensor:
    """(B, stacks, parts, h, w) heatmaps of either network's output."""
    if isinstance(out, torch.Tensor):
        return out
    return torch.stack([o.objects.heatmaps for o in out], 1)


def compare(args: argparse.Namespace) -> None:
    """The side-by-side mode (see the module docstring)."""
    torch.manual_seed(0)
    plain = PlainPoseNet(2, 256, 16)
    cfg = ModelConfig(num_stacks=2, channels=256, depth=4, increase=0, block="residual",
                      num_classes=16, embedding_dim=0)
    ours = build_model(cfg)
    ours_cl = build_model(cfg).to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.size, args.size)
    target = torch.rand(args.batch, 2, 16, args.size // 4, args.size // 4)
    nets = {"plain 2016": (plain, x), "aehg": (ours, x),
            "aehg channels_last": (ours_cl, x.contiguous(memory_format=torch.channels_last))}
    count = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, (m, _) in nets.items()}
    print(f"side by side: PoseNet(2, 256, 16) widths | input {args.batch}x3x{args.size}x"
          f"{args.size} | threads {torch.get_num_threads()} | median of {args.repeats}, "
          f"interleaved | parameters (M): "
          + ", ".join(f"{k} {v:.2f}" for k, v in count.items()))
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, (m, _) in nets.items()}

    def fwd(name: str) -> None:
        model, xi = nets[name]
        model.eval()
        with torch.inference_mode():
            model(xi)

    def train(name: str) -> None:
        model, xi = nets[name]
        model.train()
        loss = (_heat(model(xi)) - target).square().mean()
        loss.backward()
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    # Wall time, and the process's CPU time (with one thread, the figure that preemption on a
    # shared machine does not inflate).
    times: dict[tuple[str, str, str], list[float]] = {}
    for rep in range(args.warmup + args.repeats):
        for name in nets:
            for mode, fn in (("forward", fwd), ("train", train)):
                t0, c0 = time.perf_counter(), time.process_time()
                fn(name)
                if rep >= args.warmup:
                    times.setdefault((name, mode, "wall"), []).append(time.perf_counter() - t0)
                    times.setdefault((name, mode, "cpu"), []).append(time.process_time() - c0)
    ips = {k: args.batch / statistics.median(v) for k, v in times.items()}
    for clock in ("wall", "cpu"):
        print(f"{'network':>20} {'clock':>5} {'fwd img/s':>10} {'ratio':>6} {'train img/s':>12} "
              f"{'ratio':>6}")
        for name in nets:
            f, t = ips[(name, "forward", clock)], ips[(name, "train", clock)]
            print(f"{name:>20} {clock:>5} {f:>10.2f} "
                  f"{f / ips[('plain 2016', 'forward', clock)]:>6.2f} {t:>12.2f} "
                  f"{t / ips[('plain 2016', 'train', clock)]:>6.2f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for name in ("plain 2016", "aehg"):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                train(name)
            print(f"--- one training step, {name} (top operators by self CPU time)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


# --------------------------------------------------------------------------- main


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
    ap.add_argument("--compare", action="store_true", help="side by side with the plain 2016 "
                    "hourglass at PoseNet(2, 256, 16)'s widths (ignores the model options)")
    ap.add_argument("--profile", action="store_true", help="with --compare: operator profile "
                    "of one training step of each network")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.compare:
        compare(args)
        return
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
