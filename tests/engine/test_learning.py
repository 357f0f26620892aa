"""End to end: the demo configs learn on the CPU (synthetic data, real pipeline).

Budgeted in steps, so the figures do not depend on the machine's speed (a minute budget bought
fewer steps on a busy machine and failed); ``train.max_minutes`` stays as a generous safety
limit. These are the suite's long tests (with tests/engine/test_slot_learning.py); `make test`
prints their durations.
"""

from pathlib import Path

import pytest

from aehg.config import load_config
from aehg.engine import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.slow
def test_demo_pose_learns_in_550_steps(tmp_path):
    cfg = load_config(CONFIGS / "demo_pose.yaml", [
        f"data.root={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'run'}",
        "train.max_steps=550", "train.max_minutes=30"])
    summary = train(cfg)
    assert summary["step"] == 550
    ap = summary["metrics"]["AP"]
    print(f"demo_pose: {summary['step']} steps, {summary['seconds']:.0f} s, AP {ap:.3f}")
    assert ap >= 0.5, summary["metrics"]


@pytest.mark.slow
def test_demo_graph_learns_in_700_steps(tmp_path):
    cfg = load_config(CONFIGS / "demo_graph.yaml", [
        f"data.root={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'run'}",
        "train.max_steps=700", "train.max_minutes=30"])
    summary = train(cfg)
    assert summary["step"] == 700
    m = summary["metrics"]
    print(f"demo_graph: {summary['step']} steps, {summary['seconds']:.0f} s, "
          f"object recall {m['object_recall']:.3f}, ngR@20 {m['ngR@20']:.3f}")
    assert m["object_recall"] >= 0.9, m
    assert m["ngR@20"] >= 0.2, m


@pytest.mark.slow
def test_single_person_pose_reaches_pckh_090_in_100_steps(tmp_path):
    # A 2-stack hourglass on one centred stick figure per image (the 16 MPII joints, the
    # hourglass code's h5 format, data.kind single_pose): a step budget, not minutes; about
    # 70 s alone on two cores (data, 100 steps, flip-test evaluation), PCKh@0.5 1.0 then.
    cfg = load_config(None, [
        "data.kind=single_pose", "data.source=synthetic", "data.synthetic.kind=single",
        f"data.root={tmp_path / 'data'}", "data.synthetic.num_train=400",
        "data.synthetic.num_val=50", "data.synthetic.image_size=128", "data.input_size=128",
        "data.output_size=32", "data.sigma=1.0", "data.num_workers=1",
        "data.augment.rotation=20", "data.augment.translate=0.0", "data.augment.scale_min=0.85",
        "data.augment.scale_max=1.15", "data.augment.color_jitter=0.1",
        "model.num_stacks=2", "model.channels=64", "model.depth=3", "model.num_classes=16",
        "model.embedding_dim=0", "train.batch_size=16", "train.optimizer=adam",
        "train.lr=2e-3", "train.scheduler=none", "train.max_steps=100", "train.max_minutes=10",
        "train.epochs=1000",
        "train.val_interval=1000", "train.device=cpu", f"train.output_dir={tmp_path / 'run'}",
        "eval.flip_test=true"])
    summary = train(cfg)
    m = summary["metrics"]
    print(f"single person: {summary['step']} steps, {summary['seconds']:.0f} s, "
          f"PCKh@0.5 {m['PCKh@0.5']:.3f}, PCKh@0.1 {m['PCKh@0.1']:.3f}")
    assert summary["step"] == 100
    assert m["PCKh@0.5"] >= 0.9, m


@pytest.mark.slow
def test_real_photos_learn_in_800_steps_at_128_px(tmp_path):
    # The short version of benchmarks/bench_finetune.py: the 17 real COCO photos (crowd masks,
    # augmentation, the real loader with a persistent worker, pycocotools), trained and
    # evaluated on the same images, at 128 px input (32x32 maps) to keep it short: a quarter of
    # the benchmark's pixels per step. Measured with this budget (cosine to step 800): AP 0.309,
    # AP50 0.668 at one thread, AP 0.249, AP50 0.581 at two; at 256 px, 400 steps cost twice
    # as much and reached AP 0.17 (192 px, 400 steps: 0.08). The bar leaves room for both.
    root = Path(__file__).resolve().parents[1] / "data" / "coco_kp_ccby"
    cfg = load_config(CONFIGS / "coco_finetune_small.yaml", [
        f"data.root={root}", f"train.output_dir={tmp_path / 'run'}", "data.input_size=128",
        "data.output_size=32", "train.max_steps=800", "train.max_minutes=30"])
    summary = train(cfg)
    assert summary["step"] == 800
    m = summary["metrics"]
    print(f"fine-tune on 17 photos: {summary['step']} steps, {summary['seconds']:.0f} s, "
          f"AP {m['AP']:.3f}, AP50 {m['AP50']:.3f}")
    assert m["AP"] >= 0.15, m
