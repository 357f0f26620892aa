"""Share of each loss term in the total, at initialisation and after training, per weight set.

With focal heatmaps the heatmap terms are O(1–10) per stack at initialisation, while the
embedding terms (push, pull, link) are O(0.1–1) unweighted: at the AE paper's weight 1e-3 they
are ~1e-4 of the total and barely move the network (docs/design.md §3). This script trains the
demo graph model (configs/demo_graph.yaml: 2 stacks, 64 channels, depth 3, focal heatmaps) on
synthetic graph data once per weight set of push/pull/link, from the same initialisation and
the same batches, and prints for each term

* its weighted value and its share of the total loss, and
* the share of the gradient norm (over all parameters) that the weighted term alone gives,

averaged over fixed probe batches of the validation split, at initialisation and after
``--steps`` steps. The figures are the basis of the weights in configs/vg_graph.yaml and of
the focal defaults of ``aehg.config.LossConfig``.

Usage:
    python benchmarks/loss_shares.py [--steps 200] [--batch-size 8] [--weights 1e-3 0.1 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from aehg.config import load_config
from aehg.data import build_dataloader, build_dataset
from aehg.models import build_model
from aehg.models.losses import MultiStackLoss

ROOT = Path(__file__).resolve().parents[1]
TERMS = ("heatmap", "link_heatmap", "push", "pull", "link", "box")


def _probe(model: torch.nn.Module, loss_fn: MultiStackLoss, batches: list[dict]
           ) -> tuple[dict[str, float], dict[str, float]]:
    """Mean weighted value and gradient norm of each term over ``batches``."""
    params = [p for p in model.parameters() if p.requires_grad]
    value = dict.fromkeys(TERMS, 0.0)
    grad = dict.fromkeys(TERMS, 0.0)
    for batch in batches:
        outputs = model(batch["image"])
        per_term: dict[str, torch.Tensor] = {}
        for out in outputs:
            for name, v in loss_fn.stack_terms(out, batch).items():
                w = loss_fn.weights[name] * v.mean()
                per_term[name] = per_term[name] + w if name in per_term else w
        for name, v in per_term.items():
            value[name] += float(v.detach()) / len(batches)
            g = torch.autograd.grad(v, params, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((x.double() ** 2).sum() for x in g if x is not None))
            grad[name] += float(norm) / len(batches)
    return value, grad


def _row(label: str, value: dict[str, float], grad: dict[str, float]) -> str:
    total, gtotal = sum(value.values()), sum(grad.values())
    cells = [f"{value[t]:.3g} ({100 * value[t] / total:.2g} % / {100 * grad[t] / gtotal:.2g} %)"
             for t in TERMS]
    return f"| {label} | {total:.3g} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--probe-batches", type=int, default=2)
    parser.add_argument("--weights", type=float, nargs="+", default=[1e-3, 0.1, 1.0],
                        help="push = pull = link weights to compare (heatmap 1, box 0.1)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo_graph.yaml"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [
            f"data.root={tmp}", "data.num_workers=0", f"train.batch_size={args.batch_size}",
            f"data.synthetic.num_train={args.steps * args.batch_size}",
            f"data.synthetic.num_val={args.probe_batches * args.batch_size}"])
        train_set, val_set = build_dataset(cfg, "train"), build_dataset(cfg, "val")
        probes = list(build_dataloader(val_set, cfg, "val"))[:args.probe_batches]
        torch.manual_seed(cfg.train.seed)
        init_state = build_model(cfg.model).state_dict()
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, config "
              f"{Path(args.config).name}: {cfg.model.num_stacks} stacks, {cfg.model.channels} "
              f"ch, input {cfg.data.input_size}, batch {args.batch_size}, Adam lr {cfg.train.lr}, "
              f"{args.steps} steps, {args.probe_batches} probe batches of the val split")
        print("cells: weighted term (share of the total loss / share of the summed per-term "
              "gradient norms); heatmap weight 1, box weight 0.1\n")
        print("| push = pull = link weight, when | total | " + " | ".join(TERMS) + " |")
        print("|---" * (len(TERMS) + 2) + "|")
        for weight in args.weights:
            loss_cfg = dataclasses.replace(cfg.loss, heatmap_weight=1.0, box_weight=0.1,
                                           push_weight=weight, pull_weight=weight,
                                           link_weight=weight)
            loss_fn = MultiStackLoss(loss_cfg)
            model = build_model(cfg.model)
            model.load_state_dict(init_state)
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
            print(_row(f"{weight:g}, init", *_probe(model, loss_fn, probes)))
            torch.manual_seed(cfg.train.seed)
            loader = build_dataloader(train_set, cfg, "train")
            start, step = time.perf_counter(), 0
            while step < args.steps:
                for batch in loader:
                    total, _ = loss_fn(model(batch["image"]), batch)
                    opt.zero_grad(set_to_none=True)
                    total.backward()
                    opt.step()
                    step += 1
                    if step == args.steps:
                        break
            seconds = time.perf_counter() - start
            print(_row(f"{weight:g}, {args.steps} steps", *_probe(model, loss_fn, probes)),
                  f"<!-- {seconds / args.steps:.2f} s/step -->")


if __name__ == "__main__":
    main()
