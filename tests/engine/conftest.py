"""Shared setup of the engine tests: tiny CPU-sized configs on synthetic data.

The synthetic datasets are generated once per session: each lives in a folder named by its whole
spec, so tests asking for the same images share them, and a test asking for other images gets a
folder of its own (one folder for two specs would be regenerated at every switch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable

import pytest

from aehg.config import Config, load_config

# What every tiny run shares: a 1-stack hourglass of 16 channels on 64-pixel synthetic images
# (16 training, 4 validation), 16-pixel maps, batch 4 (4 steps per epoch), loaded in the main
# process, one thread. Tests add what their numbers depend on (stacks, lr, schedule, epochs …).
_COMMON = (
    "model.num_stacks=1", "model.channels=16", "model.depth=2", "data.source=synthetic",
    "data.input_size=64", "data.output_size=16", "data.sigma=1.0", "data.max_instances=6",
    "data.num_workers=0", "data.synthetic.num_train=16", "data.synthetic.num_val=4",
    "data.synthetic.image_size=64", "train.batch_size=4", "train.threads=1",
)
_KINDS = {
    "pose": ("model.num_classes=7", "data.kind=pose"),
    # Objects and relations: 4 classes (few objects and links per image), sigmoid focal centres.
    "graph": ("model.num_classes=4", "model.embedding_dim=2", "model.tag_per_class=false",
              "model.num_link_classes=3", "model.box_size=true",
              "model.heatmap_activation=sigmoid", "loss.heatmap=focal", "data.kind=relations",
              "data.synthetic.kind=graph", "data.max_links=6", "data.synthetic.max_objects=4",
              "data.synthetic.max_relations=3"),
}


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Config]:
    """Builds tiny training configs on the session's synthetic datasets.

    Returns:
        ``make(output_dir, *overrides, kind="pose")``: the config of ``train.output_dir=
        output_dir`` with the ``key=value`` overrides applied after the tiny defaults; ``kind``
        is ``"pose"`` (people, 7 parts) or ``"graph"`` (objects and relations). ``data.root`` is
        a folder of the session named by the resolved ``data.synthetic`` spec.
    """
    data_root = tmp_path_factory.mktemp("synthetic")

    def make(output_dir: str | os.PathLike[str], *overrides: str, kind: str = "pose") -> Config:
        if kind not in _KINDS:
            raise ValueError(f"kind: expected one of {sorted(_KINDS)}, got {kind!r}")
        args = [*_COMMON, *_KINDS[kind], f"train.output_dir={output_dir}", *overrides]
        spec = dataclasses.asdict(load_config(None, args).data.synthetic)
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        root = data_root / f"{spec['kind']}_{digest}"
        # data.root goes first so that a test's own data.root, if any, still wins.
        return load_config(None, [f"data.root={root}", *args])

    return make


@pytest.fixture
def train_for_steps(tmp_path) -> Callable[..., dict[str, float]]:
    """``run(config, steps, *overrides, name="run", minutes=30, show=())``: load ``config``
    (a path, or None for the defaults) with ``overrides``, train exactly ``steps`` steps into
    ``tmp_path / name`` (``train.max_minutes`` only a safety limit, so the figures do not depend
    on the machine's speed), print the time and the ``show`` metrics, return the metrics."""
    from aehg.engine import train

    def run(config: os.PathLike[str] | None, steps: int, *overrides: str, name: str = "run",
            minutes: float = 30, show: tuple[str, ...] = ()) -> dict[str, float]:
        cfg = load_config(config, [*overrides, f"train.output_dir={tmp_path / name}",
                                   f"train.max_steps={steps}", f"train.max_minutes={minutes}"])
        summary = train(cfg)
        assert summary["step"] == steps
        m = summary["metrics"]
        print(f"{name}: {steps} steps, {summary['seconds']:.0f} s, "
              + ", ".join(f"{k} {m[k]:.3f}" for k in show))
        return m

    return run
