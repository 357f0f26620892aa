"""Typed configuration: dataclasses loaded from YAML with ``key=value`` overrides.

A config file mirrors :class:`Config`: top-level sections ``model``, ``data``, ``loss``,
``train`` and ``eval``. Every key is checked against the dataclass fields, every value against
the field's type, and the error names the dotted key and the file, e.g.::

    ConfigError: configs/demo.yaml: model.num_stacks: expected int, got 'two'

Example:
    >>> cfg = load_config("configs/demo_pose.yaml", ["train.lr=1e-3", "model.num_stacks=1"])
    >>> save_config(cfg, "outputs/run/config.yaml")
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import yaml

from aehg.io import write_text

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_EMBEDDING_WEIGHTS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FittedPrior",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "AugmentConfig",
    "SyntheticConfig",
    "TASKS",
    "check_device",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "merge_dicts",
    "parse_overrides",
    "resolve_device",
    "save_config",
    "task_box_channels",
]


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the dotted key."""


@dataclass
class ModelConfig:
    """Stacked hourglass architecture (docs/design.md §2)."""

    num_stacks: int = 2
    channels: int = 256
    depth: int = 4
    increase: int = 0
    block: Literal["residual", "conv"] = "residual"
    in_channels: int = 3
    num_classes: int = 17
    embedding_dim: int = 1
    tag_per_class: bool = True
    num_link_classes: int = 0
    box_size: bool = False
    # "linear" for the MSE heatmap loss (the AE paper); "sigmoid" for the focal loss.
    heatmap_activation: Literal["linear", "sigmoid"] = "linear"
    # What the first layer expects: "imagenet" (the data pipeline's ImageNet mean/std input) or
    # "none" (RGB / 255 in [0, 1], as the hourglass code trained its released networks; the
    # model then undoes the pipeline's normalisation first). docs/design.md §2.
    input_norm: Literal["imagenet", "none"] = "imagenet"
    # Slots per output pixel (docs/design.md "Slots"): how many objects (links) one pixel of the
    # object (interaction) maps can hold. 1 and 1 are the one-value-per-pixel layout.
    object_slots: int = 1
    relation_slots: int = 1
    # Box input channels after the image (data.task sgcls / predcls, docs/design.md §2 "Tasks"):
    # None is filled in from data.task when the config is built (task_box_channels: 0 for
    # sgdet, 2 for sgcls, 2 + num_classes for predcls); 0 is a model that sees the image only.
    box_channels: int | None = None
    # "paper": 7x7/2 conv, a block at half resolution, max-pool, two blocks. "light": the first
    # block after the max-pool, at quarter resolution (same weights' shapes; docs/design.md §2).
    stem: Literal["paper", "light"] = "paper"

    def validate(self, where: str = "model") -> None:
        _positive(self, where, "num_stacks", "channels", "depth", "in_channels", "num_classes",
                  "object_slots", "relation_slots")
        # E = 0: no tag channels (single-person pose, data.kind single_pose).
        _non_negative(self, where, "increase", "num_link_classes", "embedding_dim")
        if self.box_channels is not None:
            _non_negative(self, where, "box_channels")
        for name in ("object_slots", "relation_slots"):
            if getattr(self, name) > 6:
                raise ConfigError(f"{where}.{name}: expected 1..6 (slots are matched over all "
                                  f"permutations), got {getattr(self, name)}")
        if self.object_slots > 1 and (self.tag_per_class or self.embedding_dim < 1):
            raise ConfigError(f"{where}.object_slots: {self.object_slots} slots need one shared "
                              f"tag map per slot (tag_per_class: false, embedding_dim >= 1)")
        if self.relation_slots > 1 and self.num_link_classes < 1:
            raise ConfigError(f"{where}.relation_slots: {self.relation_slots} slots need an "
                              f"interaction head (num_link_classes >= 1)")


@dataclass
class AugmentConfig:
    """Training-time augmentation (one affine warp per sample plus colour jitter)."""

    rotation: float = 30.0
    scale_min: float = 0.75
    scale_max: float = 1.25
    translate: float = 0.2
    flip_prob: float = 0.5
    color_jitter: float = 0.2

    def validate(self, where: str = "data.augment") -> None:
        _non_negative(self, where, "rotation", "translate", "color_jitter")
        if not 0.0 < self.scale_min <= self.scale_max:
            raise ConfigError(f"{where}.scale_min: expected 0 < scale_min <= scale_max, got "
                              f"{self.scale_min} and {self.scale_max}")
        _probability(self, where, "flip_prob")


@dataclass
class SyntheticConfig:
    """Parameters of a generated dataset (used when ``data.source`` is ``synthetic``)."""

    # "single": one centred stick figure per image with the 16 MPII joints, written in the
    # hourglass code's h5 format (data.kind single_pose; needs h5py).
    kind: Literal["pose", "graph", "single"] = "pose"
    num_train: int = 1000
    num_val: int = 100
    image_size: int = 128
    num_parts: int = 7
    max_people: int = 6
    num_object_classes: int = 4
    num_link_classes: int = 3
    seed: int = 0
    # Graph kind: objects per image (at least 2) and links (arrows) per image.
    max_objects: int = 6
    max_relations: int = 6
    # Graph kind, collisions (docs/design.md §5; 0 = off, the original data): the probability
    # that an object gets a partner of another class at exactly its centre (a smaller shape on
    # top: up to 2 * max_objects objects), that a relation also has its reverse (B -> A), and
    # that a relation has a second predicate for the same ordered pair.
    shared_centre_prob: float = 0.0
    reverse_prob: float = 0.0
    multi_predicate_prob: float = 0.0
    # Graph kind, arrow drawing as fractions of image_size: the head's length (at least 4 px)
    # and the line's width (at least 1 px). The defaults draw the original data; a head too
    # small to survive the network's stride-4 maps hides the direction (docs/design.md §5).
    arrow_head: float = 0.05
    arrow_width: float = 0.01

    def validate(self, where: str = "data.synthetic") -> None:
        _positive(self, where, "num_train", "num_val", "image_size", "max_people",
                  "num_object_classes", "num_link_classes", "max_relations")
        if self.num_parts < 7:
            raise ConfigError(f"{where}.num_parts: expected at least 7, got {self.num_parts}")
        # The stick figure adds parts in left/right pairs (elbows, knees, shoulders, hips).
        if self.num_parts not in (7, 9, 11, 13, 15):
            raise ConfigError(f"{where}.num_parts: expected one of 7, 9, 11, 13, 15, "
                              f"got {self.num_parts}")
        if self.image_size < 32:
            raise ConfigError(f"{where}.image_size: expected at least 32, got {self.image_size}")
        if self.max_objects < 2:
            raise ConfigError(f"{where}.max_objects: expected at least 2, got {self.max_objects}")
        # Classes must stay distinguishable by pixels: fixed palettes of shapes/colours.
        if self.num_object_classes > 12:
            raise ConfigError(f"{where}.num_object_classes: expected at most 12, "
                              f"got {self.num_object_classes}")
        if self.num_link_classes > 6:
            raise ConfigError(f"{where}.num_link_classes: expected at most 6, "
                              f"got {self.num_link_classes}")
        _probability(self, where, "shared_centre_prob", "reverse_prob", "multi_predicate_prob")
        for key, top in (("arrow_head", 0.3), ("arrow_width", 0.05)):
            value = getattr(self, key)
            if not 0.0 < value <= top:
                raise ConfigError(f"{where}.{key}: expected a fraction of image_size in "
                                  f"(0, {top}], got {value}")
        # A partner has another colour, a second predicate another class.
        for prob, count in (("shared_centre_prob", "num_object_classes"),
                            ("multi_predicate_prob", "num_link_classes")):
            if getattr(self, prob) > 0 and getattr(self, count) < 2:
                raise ConfigError(f"{where}.{prob}: needs {where}.{count} >= 2, got "
                                  f"{getattr(self, count)}")


@dataclass
class DataConfig:
    """Dataset location, resolution and target parameters."""

    # single_pose: one person per sample, cropped around its centre and scale (MPII; no tags).
    kind: Literal["pose", "relations", "single_pose"] = "pose"
    # mpii: train_json / val_json name the hourglass code's annot/{train,valid}.h5, or (training
    # split only) the official mpii_human_pose_v1_u12_1.mat; docs/design.md §5.
    source: Literal["coco", "synthetic", "mpii"] = "coco"
    root: str = "data/coco"
    train_json: str = "annotations/person_keypoints_train2017.json"
    train_images: str = "train2017"
    val_json: str = "annotations/person_keypoints_val2017.json"
    val_images: str = "val2017"
    input_size: int = 512
    output_size: int = 128
    sigma: float = 2.0
    max_instances: int = 30
    max_links: int = 64
    # Left/right swap of horizontal flips (part c of a flipped image is part flip_map[c]); None:
    # the category's flip_map, else derived from the part names' side words (left_/l_/Left/_L…),
    # else an error when anything flips. Training stores the resolved swap here.
    flip_map: list[int] | None = None
    # Per-part OKS sigmas for COCO keypoint evaluation; None: COCO's for 17 parts.
    oks_sigmas: list[float] | None = None
    num_workers: int = 2
    # Keep the training loader's worker processes for the whole run: one stream of batches over
    # every epoch, loaded ahead across epoch boundaries. False: new workers every epoch.
    persistent_workers: bool = True
    # Batches each loader worker loads ahead (with num_workers > 0).
    prefetch_factor: int = 2
    skip_unreadable: bool = False
    # Drop training images without any usable instance (people with keypoints / objects).
    filter_empty: bool = True
    # Relations: the training (subject, predicate, object) triplets for zero-shot recall (zR@K),
    # a train_triplets.json relative to root. None: train_triplets.json beside val_json when
    # there is one, else the triplets of train_json (docs/design.md §6).
    train_triplets: str | None = None
    # Relations: the scene-graph task (docs/design.md §2 "Tasks"). sgdet: objects and relations
    # from the image; sgcls: the boxes are given (box input channels), classes and relations
    # predicted; predcls: boxes and classes given, relations predicted.
    task: Literal["sgdet", "sgcls", "predcls"] = "sgdet"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def validate(self, where: str = "data") -> None:
        _positive(self, where, "input_size", "output_size", "sigma", "max_instances", "max_links")
        _non_negative(self, where, "num_workers")
        _positive(self, where, "prefetch_factor")
        if self.input_size % self.output_size:
            raise ConfigError(f"{where}.input_size: expected a multiple of output_size "
                              f"({self.output_size}), got {self.input_size}")
        self.augment.validate(f"{where}.augment")
        self.synthetic.validate(f"{where}.synthetic")
        if self.source == "synthetic":
            want = {"pose": "pose", "relations": "graph", "single_pose": "single"}[self.kind]
            if self.synthetic.kind != want:
                raise ConfigError(f"{where}.synthetic.kind: expected {want!r} for "
                                  f"{where}.kind {self.kind!r}, got {self.synthetic.kind!r}")
        if self.task not in TASKS:  # also for configs built in Python
            raise ConfigError(f"{where}.task: expected one of {list(TASKS)}, got {self.task!r}")
        if self.task != "sgdet" and self.kind != "relations":
            raise ConfigError(f"{where}.task: {self.task!r} needs {where}.kind 'relations' "
                              f"(scene graphs), got {self.kind!r}")
        if self.train_triplets is not None and not self.train_triplets.strip():
            raise ConfigError(f"{where}.train_triplets: expected null or a path (relative to "
                              f"{where}.root), got an empty string")


# Scene-graph tasks (data.task) and the box input channels each one needs.
TASKS = ("sgdet", "sgcls", "predcls")


def task_box_channels(task: str, num_classes: int) -> int:
    """Box input channels of a task (docs/design.md §2 "Tasks"): 0 for ``sgdet``; 2 (box
    interior mask, centre heatmap) for ``sgcls``; 2 + ``num_classes`` (plus one class mask per
    class) for ``predcls``."""
    if task not in TASKS:
        raise ConfigError(f"data.task: expected one of {list(TASKS)}, got {task!r}")
    return {"sgdet": 0, "sgcls": 2, "predcls": 2 + int(num_classes)}[task]


# Default push / pull / link weights by heatmap loss (docs/design.md §3): the embedding terms
# must weigh enough next to the heatmap terms to move the network. MSE heatmaps are a per-pixel
# mean (O(1e-3)), so the AE paper's 1e-3 balances them; focal heatmaps are normalised by the
# positives (about 9 per stack and map at initialisation), where 1e-3 leaves the embedding
# terms at ~1e-4 of the loss and 1.0 gives them 5-18 % after 200 steps
# (benchmarks/loss_shares.py).
DEFAULT_EMBEDDING_WEIGHTS: dict[str, float] = {"mse": 1e-3, "focal": 1.0}


@dataclass
class LossConfig:
    """Loss kinds and weights (docs/design.md §3).

    ``push_weight``, ``pull_weight`` and ``link_weight`` left at None are filled in when the
    config is built, by the heatmap loss: :data:`DEFAULT_EMBEDDING_WEIGHTS` (1e-3 for ``mse``,
    the AE paper's pose setting; 1.0 for ``focal``, the relation models'). The resolved
    numbers are what a saved config holds.
    """

    heatmap: Literal["mse", "focal"] = "mse"
    heatmap_weight: float = 1.0
    push_weight: float | None = None
    pull_weight: float | None = None
    link_weight: float | None = None
    box_weight: float = 0.1
    # None: the exp push of the AE paper; a number m: the margin form max(0, m - d)^2.
    push_margin: float | None = None

    def __post_init__(self) -> None:
        default = DEFAULT_EMBEDDING_WEIGHTS.get(self.heatmap)
        for name in ("push_weight", "pull_weight", "link_weight"):
            if getattr(self, name) is None and default is not None:
                setattr(self, name, default)

    def validate(self, where: str = "loss") -> None:
        if self.heatmap not in DEFAULT_EMBEDDING_WEIGHTS:  # also for configs built in Python
            raise ConfigError(f"{where}.heatmap: expected 'mse' or 'focal', got "
                              f"{self.heatmap!r}")
        for name in ("push_weight", "pull_weight", "link_weight"):
            if getattr(self, name) is None:
                raise ConfigError(f"{where}.{name}: expected a number, got None")
        _non_negative(self, where, "heatmap_weight", "push_weight", "pull_weight", "link_weight",
                      "box_weight")
        if self.push_margin is not None and self.push_margin <= 0:
            raise ConfigError(f"{where}.push_margin: expected a positive number or null, "
                              f"got {self.push_margin}")


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpointing and logging."""

    output_dir: str = "outputs/run"
    epochs: int = 100
    # Stop after this many optimiser steps / minutes when > 0 (whichever comes first).
    max_steps: int = 0
    max_minutes: float = 0.0
    batch_size: int = 32
    optimizer: Literal["adam", "adamw", "rmsprop"] = "adam"
    lr: float = 2e-4
    weight_decay: float = 0.0
    scheduler: Literal["none", "step", "cosine"] = "step"
    milestones: list[int] = field(default_factory=lambda: [200, 260])
    gamma: float = 0.1
    warmup_steps: int = 0
    amp: Literal["none", "bf16", "fp16"] = "none"
    grad_clip: float = 0.0
    # > 0: also keep an exponential moving average of the weights (e.g. 0.99 ~ the last 100
    # steps), validate it and save it as the checkpoints' "model" (docs/design.md §9).
    ema_decay: float = 0.0
    seed: int = 0
    log_interval: int = 20
    # Validate every val_interval epochs (and at the end); checkpoint last.pt every epoch and,
    # when > 0, every checkpoint_interval steps.
    val_interval: int = 1
    checkpoint_interval: int = 0
    # last.pt at an epoch's end only once this many steps have passed since the previous write
    # (0: at every epoch end); the end of training always writes it.
    checkpoint_min_steps: int = 100
    # Validation metric that selects best.pt; "auto": AP for pose, ngR@20 for relations,
    # PCKh@0.5 for single_pose.
    best_metric: str = "auto"
    threads: int = 0
    # auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps.
    device: str = "auto"
    # Batch-norm statistics over all processes in DDP (CUDA only: torch's SyncBatchNorm has no
    # CPU kernel; on CPU each process keeps its own and rank 0's are checkpointed).
    sync_bn: bool = True
    # NHWC memory layout: faster convolutions on CPU and on CUDA tensor cores.
    channels_last: bool = True

    def validate(self, where: str = "train") -> None:
        _positive(self, where, "epochs", "batch_size", "lr", "log_interval", "val_interval")
        _non_negative(self, where, "max_steps", "max_minutes", "weight_decay", "warmup_steps",
                      "grad_clip", "threads", "checkpoint_interval", "checkpoint_min_steps")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{where}.ema_decay: expected a value in [0, 1) (0: no moving "
                              f"average), got {self.ema_decay}")
        check_device(self.device, f"{where}.device")


@dataclass
class FittedPrior:
    """A :class:`aehg.decoding.PosePrior` as plain numbers, fitted by training on its training
    annotations when ``eval.pose_prior`` is ``train`` (docs/design.md §4): the saved config and
    every checkpoint then carry the prior the model was validated with."""

    mean: list[list[float]]
    std: list[list[float]]


@dataclass
class EvalConfig:
    """Decoding and evaluation parameters (docs/design.md §4, §6)."""

    nms_kernel: int = 5
    top_k: int = 30
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    max_instances: int = 30
    adjust: bool = True
    # Sub-pixel rule of adjust (docs/design.md §4): "quarter" (the AE code's quarter pixel
    # towards the higher neighbour) or "quadratic" (vertex of the log-heat parabola per axis).
    subpixel: Literal["quarter", "quadratic"] = "quarter"
    refine: bool = True
    flip_test: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    stacks: int | None = None
    object_nms_kernel: int = 3
    object_top_k: int = 100
    link_threshold: float = 0.1
    max_distance: float = 1.0
    graph_constraint: bool = False
    recall_ks: list[int] = field(default_factory=lambda: [20, 50, 100])
    # How a predicted triplet is ranked for recall and in custom_prediction.json: "aehg" = link
    # heat x sqrt(subject score x object score) (build_graph's edge score), "sgb" = link heat x
    # subject score x object score (Scene-Graph-Benchmark's); docs/design.md §6.
    triplet_score: Literal["aehg", "sgb"] = "aehg"
    # Pose only. Where absent parts go in COCO results: "centroid" of the person's detected
    # parts (score 0) or "zero" (the image origin); OKS reads every part (docs/design.md §6).
    missing_keypoints: Literal["centroid", "zero"] = "centroid"
    # Grouping order of the parts (a permutation of 0..C-1); null: COCO's order for 17 parts,
    # else index order (docs/design.md §4).
    part_order: list[int] | None = None
    # Grouping (docs/design.md §4): "layout" (tag distance, confidence and the spatial layout
    # of a person, the default) or "greedy" (the AE code's tag-only matching); the layout
    # method's pose prior ("auto": COCO's for 17 parts, else "flat"; "train": fitted on the
    # training annotations when training starts and stored in fitted_prior; or a PosePrior
    # JSON file) and its weights.
    group_method: Literal["layout", "greedy"] = "layout"
    pose_prior: str = "auto"
    fitted_prior: FittedPrior | None = None
    spatial_weight: float = 0.1
    confidence_weight: float = 0.5
    strong_ratio: float = 0.5
    hold_duplicates: bool = True
    merge_ratio: float = 0.8
    # Test-time geometry (docs/design.md §8): keep the aspect ratio (short side to
    # data.input_size, long side rounded up to the network's multiple) instead of padding to a
    # square (one picture per forward pass); decode on maps upsampled (bicubic) to input
    # resolution (decoding then costs ~stride^2 more).
    keep_aspect: bool = False
    project_to_input: bool = False
    # Pose NMS of the final poses: "oks" drops a pose whose OKS with a higher-scored one
    # exceeds pose_nms_threshold; "none" keeps all.
    pose_nms: Literal["none", "oks"] = "none"
    pose_nms_threshold: float = 0.9

    def validate(self, where: str = "eval") -> None:
        _positive(self, where, "nms_kernel", "top_k", "max_instances", "object_nms_kernel",
                  "object_top_k", "max_distance")
        for name in ("nms_kernel", "object_nms_kernel"):
            if getattr(self, name) % 2 == 0:
                raise ConfigError(f"{where}.{name}: expected an odd kernel size, "
                                  f"got {getattr(self, name)}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"{where}.scales: expected a non-empty list of positive scales, "
                              f"got {self.scales}")
        if self.stacks is not None and self.stacks < 1:
            raise ConfigError(f"{where}.stacks: expected null or >= 1, got {self.stacks}")
        if self.triplet_score not in ("aehg", "sgb"):  # also for configs built in Python
            raise ConfigError(f"{where}.triplet_score: expected 'aehg' or 'sgb', "
                              f"got {self.triplet_score!r}")
        for name, allowed in (("missing_keypoints", ("centroid", "zero")),
                              ("subpixel", ("quarter", "quadratic")),
                              ("pose_nms", ("none", "oks")),
                              ("group_method", ("layout", "greedy"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{where}.{name}: expected one of {list(allowed)}, got "
                                  f"{getattr(self, name)!r}")
        if not 0.0 < self.pose_nms_threshold <= 1.0:
            raise ConfigError(f"{where}.pose_nms_threshold: expected a value in (0, 1], got "
                              f"{self.pose_nms_threshold}")
        if self.fitted_prior is not None:
            fp, c = self.fitted_prior, len(self.fitted_prior.mean)
            for name in ("mean", "std"):
                rows = getattr(fp, name)
                if len(rows) != c or any(len(r) != c for r in rows):
                    raise ConfigError(f"{where}.fitted_prior.{name}: expected a square C x C "
                                      f"list like the mean ({c} rows), got "
                                      f"{[len(r) for r in rows]} entries per row")
        if self.part_order is not None and sorted(self.part_order) != list(
                range(len(self.part_order))):
            raise ConfigError(f"{where}.part_order: expected a permutation of 0..C-1, got "
                              f"{self.part_order}")


@dataclass
class Config:
    """The whole configuration of a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        # model.box_channels left unset follows data.task (an unknown task is validate's error).
        if self.model.box_channels is None and self.data.task in TASKS:
            self.model.box_channels = task_box_channels(self.data.task, self.model.num_classes)

    def validate(self) -> None:
        """Check value ranges and cross-section consistency; raise :class:`ConfigError`."""
        self.model.validate("model")
        self.data.validate("data")
        self.loss.validate("loss")
        self.train.validate("train")
        self.eval.validate("eval")
        if self.eval.stacks is not None and self.eval.stacks > self.model.num_stacks:
            raise ConfigError(f"eval.stacks: expected at most model.num_stacks "
                              f"({self.model.num_stacks}), got {self.eval.stacks}")
        n_parts = self.model.num_classes
        if self.data.kind in ("pose", "single_pose"):
            for name in ("flip_map", "oks_sigmas"):
                value = getattr(self.data, name)
                if value is not None and len(value) != n_parts:
                    raise ConfigError(f"data.{name}: expected {n_parts} entries "
                                      f"(model.num_classes), got {len(value)}")
            if self.data.flip_map is not None and sorted(self.data.flip_map) != list(
                    range(n_parts)):
                raise ConfigError(f"data.flip_map: expected a permutation of 0..{n_parts - 1}, "
                                  f"got {self.data.flip_map}")
        if self.eval.fitted_prior is not None and len(self.eval.fitted_prior.mean) != n_parts:
            raise ConfigError(f"eval.fitted_prior: expected a prior of {n_parts} parts "
                              f"(model.num_classes), got {len(self.eval.fitted_prior.mean)}")
        if self.eval.part_order is not None and len(self.eval.part_order) != n_parts:
            raise ConfigError(f"eval.part_order: expected {n_parts} entries "
                              f"(model.num_classes), got {len(self.eval.part_order)}")
        if self.loss.heatmap == "focal" and self.model.heatmap_activation != "sigmoid":
            raise ConfigError("loss.heatmap: 'focal' needs model.heatmap_activation: sigmoid")
        self._check_single_pose()
        self._check_task()

    def _check_task(self) -> None:
        """The model's box input channels must be the ones ``data.task`` renders."""
        task, got = self.data.task, self.model.box_channels
        want = task_box_channels(task, self.model.num_classes)
        if got is not None and got != want:
            what = {"sgdet": "none (the image only)",
                    "sgcls": "2 (box interior mask, centre heatmap)",
                    "predcls": f"2 + model.num_classes = {want} (box interior mask, centre "
                               f"heatmap, one class mask per class)"}[task]
            have = "a model without box input channels" if got == 0 else \
                f"a model with {got} box input channels"
            raise ConfigError(f"model.box_channels: data.task {task!r} needs {what}, got {got} "
                              f"({have}; leave model.box_channels unset to follow data.task)")

    def _check_single_pose(self) -> None:
        """Single-person pose has heatmaps only; the multi-instance kinds need tags."""
        m, kind = self.model, self.data.kind
        if kind == "single_pose":
            for name, value, want in (("embedding_dim", m.embedding_dim, 0),
                                      ("num_link_classes", m.num_link_classes, 0),
                                      ("box_size", m.box_size, False)):
                if value != want:
                    raise ConfigError(f"model.{name}: expected {want} for data.kind single_pose "
                                      f"(one person per sample: heatmaps only), got {value}")
        elif m.embedding_dim < 1:
            raise ConfigError(f"model.embedding_dim: expected at least 1 for data.kind {kind!r} "
                              f"(the tags group detections into instances; 0 is for "
                              f"single_pose), got {m.embedding_dim}")
        if self.data.source == "mpii" and kind != "single_pose":
            raise ConfigError(f"data.kind: expected 'single_pose' for data.source 'mpii' (one "
                              f"person per sample), got {kind!r}")


# --------------------------------------------------------------------------- checks


def _positive(obj: Any, where: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{where}.{name}: expected a positive value, got {value}")


def _non_negative(obj: Any, where: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise ConfigError(f"{where}.{name}: expected a non-negative value, got {value}")


def _probability(obj: Any, where: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}.{name}: expected a value in [0, 1], got {value}")


# --------------------------------------------------------------------------- devices

_DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?|mps")


def check_device(device: str, key: str = "train.device") -> str:
    """Check the form of a device name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Only the form: whether this machine has the device is :func:`resolve_device`'s question.

    Args:
        device: the name as written in the config or on the command line.
        key: what to name in the error (the config key or the option).

    Returns:
        ``device`` unchanged.

    Raises:
        ConfigError: ``"<key>: expected auto, cpu, cuda, cuda:N or mps, got 'banana'"``.
    """
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise ConfigError(f"{key}: expected auto, cpu, cuda, cuda:N or mps, got {device!r}")
    return device


def resolve_device(device: str | torch.device | None, key: str = "device") -> torch.device:
    """The torch device for a device name, checked against what this machine has.

    Args:
        device: ``None`` or ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"``, ``"mps"``, or a ``torch.device`` of those types.
        key: what to name in errors (``"train.device"``, ``"--device"``, …).

    Returns:
        The device; a bare ``"cuda"`` stays without an index (the current CUDA device).

    Raises:
        ConfigError: a malformed name (see :func:`check_device`), or a device this machine
            lacks, e.g. ``"train.device: 'cuda' requested but CUDA is not available on this
            machine (use cpu or auto)"`` (never torch's own ``AssertionError`` later on).
    """
    import torch  # here, so that reading a config does not load torch

    name = "auto" if device is None else str(device)
    check_device(name, key)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}: {name!r} requested but CUDA is not available on this "
                              f"machine (use cpu or auto)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{key}: {name!r} requested but this machine has {count} CUDA "
                              f"device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}: {name!r} requested but MPS is not available on this machine "
                          f"(use cpu or auto)")
    return dev


# --------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` and return it converted; raise naming ``key``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        given = [a for a in args if a is not type(None)]
        if len(given) == 1 and dataclasses.is_dataclass(given[0]):
            return _convert(value, given[0], key)  # its own message names the field
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item,) = get_args(tp)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it is.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected float, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected str, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known keys: "
                          f"{', '.join(sorted(names))})")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{missing[0]}: missing (a {cls.__name__} needs "
                          f"{', '.join(f.name for f in dataclasses.fields(cls))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested mapping (missing keys: defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}")
    cfg = _build(Config, data, "")
    cfg.validate()
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The plain nested-dict form of ``cfg`` (what :func:`save_config` writes)."""
    return dataclasses.asdict(cfg)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[1, 2]"]`` into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.lr=1e-3)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: malformed key {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from exc
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: conflicts with an earlier override of {part}")
            node = child
        node[parts[-1]] = value
    return nested


def merge_dicts(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, nested mappings merged key by key (inputs unchanged)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config and apply ``key=value`` overrides.

    Args:
        path: YAML file; ``None`` starts from the defaults.
        overrides: dotted ``key=value`` strings, values parsed as YAML (``train.lr=1e-3``,
            ``data.flip_map=[0,2,1]``, ``eval.stacks=null``).

    Returns:
        The validated config.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: not UTF-8 text (a binary file), malformed YAML, an unknown key, a wrong
            type or a bad value; the message starts with the file name and names the dotted key.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {source}")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            # A binary file or another encoding: say so, not which byte Python choked on.
            raise ConfigError(f"{source}: not a UTF-8 text file (expected a YAML config; "
                              f"byte {exc.start} is 0x{exc.object[exc.start]:02x})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level, "
                              f"got {type(loaded).__name__}")
        data = loaded
    try:
        data = merge_dicts(data, parse_overrides(list(overrides)))
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def save_config(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically (temp file, then ``os.replace``)."""
    write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
