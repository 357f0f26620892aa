"""Running a trained model on pictures: :class:`Predictor` (docs/design.md §8)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from aehg.checkpoint import load_checkpoint, load_model_weights
from aehg.config import Config, config_from_dict, config_to_dict, resolve_device
from aehg.data.box_channels import box_channel_sigma, check_known_objects
from aehg.data.info import DataInfo, data_info
from aehg.inference.decode import Prediction, decode_predictions
from aehg.inference.io import read_image
from aehg.inference.maps import infer_maps
from aehg.models import build_model

# resolve_device lives with the config (the engine needs it too) and is re-exported here, where
# Predictor and evaluate_checkpoint use it: an unavailable device is a ConfigError naming it.
__all__ = ["Predictor", "check_checkpoint_input", "config_from_checkpoint", "resolve_device",
           "with_checkpoint_prior"]


def config_from_checkpoint(checkpoint: Mapping[str, Any], overrides: Sequence[str] = (),
                           source: str = "checkpoint") -> Config:
    """The config stored in a checkpoint, with ``key=value`` overrides applied.

    Raises:
        ValueError: the checkpoint has no config.
        ConfigError: a stored value or an override is invalid.
    """
    from aehg.config import ConfigError, merge_dicts, parse_overrides

    stored = checkpoint.get("config")
    if not isinstance(stored, Mapping):
        raise ValueError(f"{source}: has no 'config' entry; pass the config explicitly")

    try:
        return config_from_dict(merge_dicts(stored, parse_overrides(list(overrides))))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def with_checkpoint_prior(cfg: Config, checkpoint: Mapping[str, Any]) -> Config:
    """``cfg`` with the checkpoint's ``eval.fitted_prior`` when ``cfg`` asks for the prior
    fitted on the training annotations (``eval.pose_prior: train``) but carries none, as a
    YAML config does before training (docs/design.md §4); otherwise ``cfg`` itself. ``cfg``
    is not modified."""
    if cfg.eval.pose_prior != "train" or cfg.eval.fitted_prior is not None:
        return cfg
    stored = checkpoint.get("config")
    fitted = stored.get("eval", {}).get("fitted_prior") if isinstance(stored, Mapping) else None
    if fitted is None:
        return cfg
    data = config_to_dict(cfg)
    data["eval"]["fitted_prior"] = fitted
    return config_from_dict(data)


def check_checkpoint_input(cfg: Config, checkpoint: Mapping[str, Any],
                           source: str = "checkpoint") -> None:
    """The checkpoint's first layer must take the input ``cfg.data.task`` feeds it.

    A model trained on images alone (sgdet, 3 input channels) cannot run sgcls / predcls,
    whose input adds the box channels (docs/design.md §2 "Tasks"), and the other way round.

    Raises:
        ValueError: the message names the task, both channel counts and the checkpoint.
    """
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping):
        return  # load_model_weights names that problem
    weight = state.get("stem.0.weight", state.get("module.stem.0.weight"))
    if weight is None or getattr(weight, "ndim", 0) != 4:
        return
    have = int(weight.shape[1])
    boxes = cfg.model.box_channels or 0
    want = cfg.model.in_channels + boxes
    if have != want:
        task = cfg.data.task
        what = "a model without box input channels" if have == cfg.model.in_channels else \
            f"a model with {have - cfg.model.in_channels} box input channels"
        raise ValueError(f"{source}: data.task {task!r} needs a model with {want} input "
                         f"channels ({cfg.model.in_channels} image + {boxes} box channels), "
                         f"but the checkpoint's first layer (stem.0.weight) takes {have}: "
                         f"{what}; train one with data.task {task!r} or evaluate this one with "
                         f"its own task")


class Predictor:
    """Run a trained model on pictures.

    Args:
        cfg: the run's config; None takes the one stored in the checkpoint.
        checkpoint: a checkpoint path (loaded with ``torch.load(weights_only=True)``) or an
            already loaded checkpoint dict.
        device: "cpu", "cuda", "cuda:1", … or None/"auto" (cuda when available).
        flip: flip test (default ``cfg.eval.flip_test``).
        scales: test scales (default ``cfg.eval.scales``).
        stacks: early exit after this many stacks (default ``cfg.eval.stacks``: all).
        batch_size: pictures per forward pass in :meth:`predict_batch`.
        info: names / skeleton / flip map (default :func:`data_info` of ``cfg``).

    The task is ``cfg.data.task`` (docs/design.md §2 "Tasks"): an sgcls / predcls model needs
    the known objects of every picture (``predict(image, boxes=…, labels=…)``).

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: the checkpoint is unreadable, has no config when ``cfg`` is None, or does
            not fit the architecture of ``cfg.model`` (the message names the keys).

    Example:
        >>> p = Predictor(cfg, "best.pt", flip=True, stacks=1)
        >>> preds = p.predict_batch(["a.jpg", "b.jpg"])
    """

    def __init__(self, cfg: Config | None, checkpoint: str | os.PathLike[str] | Mapping[str, Any],
                 *, device: str | torch.device | None = None, flip: bool | None = None,
                 scales: Sequence[float] | None = None, stacks: int | None = None,
                 batch_size: int = 8, info: DataInfo | None = None) -> None:
        source = "checkpoint"
        if isinstance(checkpoint, Mapping):
            ckpt = checkpoint
        else:
            source = f"checkpoint {checkpoint}"
            ckpt = load_checkpoint(checkpoint)
        if cfg is None:
            cfg = config_from_checkpoint(ckpt, source=source)
        cfg = with_checkpoint_prior(cfg, ckpt)
        if "model" not in ckpt:
            raise ValueError(f"{source}: has no 'model' entry (expected a training checkpoint "
                             f"with the model's state dict)")
        self.cfg = cfg
        self.device = resolve_device(device)
        check_checkpoint_input(cfg, ckpt, source)
        self.task = cfg.data.task if cfg.data.kind == "relations" else "sgdet"
        model = build_model(cfg.model)
        load_model_weights(model, ckpt, source=source)
        # channels_last: see aehg.inference.maps.forward_maps.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.flip = cfg.eval.flip_test if flip is None else bool(flip)
        self.scales = list(cfg.eval.scales if scales is None else scales)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales: expected positive scales, got {self.scales}")
        self.stacks = cfg.eval.stacks if stacks is None else int(stacks)
        if self.stacks is not None and not 1 <= self.stacks <= cfg.model.num_stacks:
            raise ValueError(f"stacks: expected 1..{cfg.model.num_stacks} (model.num_stacks), "
                             f"got {self.stacks}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.info = info if info is not None else data_info(cfg)
        if self.flip:
            self.info.require_flip_map("flip test (Predictor flip=True / eval.flip_test)")

    def _load(self, image: str | os.PathLike[str] | np.ndarray, index: int
              ) -> tuple[np.ndarray, str | None]:
        if isinstance(image, (str, os.PathLike)):
            return read_image(image), Path(image).name
        arr = np.asarray(image)
        if arr.ndim == 2 and arr.dtype == np.uint8:
            arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"images[{index}]: expected a path or a uint8 BGR array (H, W, 3), "
                             f"got {arr.dtype} {arr.shape}")
        return arr, None

    def predict(self, image: str | os.PathLike[str] | np.ndarray,
                image_id: int | None = None, *,
                center: tuple[float, float] | np.ndarray | None = None,
                scale: float | None = None, boxes: Any = None, labels: Any = None
                ) -> Prediction:
        """Predict one picture (a path or a BGR uint8 array as read by OpenCV).

        ``center`` (x, y) and ``scale`` (person height / 200 px, MPII's) crop the picture around
        one person as the hourglass code does (single-person pose); without them the whole
        picture is the input.

        ``boxes`` (N, 4) x1, y1, x2, y2 in picture pixels and ``labels`` (N,) are the known
        objects of an sgcls / predcls model (``cfg.data.task``; labels are needed for
        predcls and ignored for sgcls): the graph's nodes are then exactly these boxes, in this
        order (docs/design.md §2 "Tasks").

        Raises:
            ValueError: boxes missing for an sgcls / predcls model or given to an sgdet one,
                an empty box list, a box outside the picture, labels missing (predcls) or out
                of range; the message names the argument.
        """
        crops = None if center is None and scale is None else [(center, scale)]
        known = boxes is not None or labels is not None
        return self.predict_batch([image], None if image_id is None else [image_id],
                                  crops=crops, boxes=[boxes] if known else None,
                                  labels=[labels] if known else None)[0]

    def predict_batch(self, images: Sequence[str | os.PathLike[str] | np.ndarray],
                      image_ids: Sequence[int] | None = None, *,
                      crops: Sequence[tuple[Any, float] | None] | None = None,
                      boxes: Sequence[Any] | None = None, labels: Sequence[Any] | None = None
                      ) -> list[Prediction]:
        """Predict pictures, ``batch_size`` at a time; one :class:`Prediction` each, in order.

        ``crops`` gives per picture a person's ``(center, scale)`` to crop around, or None.
        ``boxes`` and ``labels`` give per picture its known objects (sgcls / predcls, see
        :meth:`predict`).

        Raises:
            ImageReadError: a path is missing or not a picture (the message names it).
        """
        if image_ids is not None and len(image_ids) != len(images):
            raise ValueError(f"image_ids: expected {len(images)} ids, got {len(image_ids)}")
        if crops is not None and len(crops) != len(images):
            raise ValueError(f"crops: expected {len(images)} (center, scale) or None, got "
                             f"{len(crops)}")
        for name, per in (("boxes", boxes), ("labels", labels)):
            if per is not None and len(per) != len(images):
                raise ValueError(f"{name}: expected one entry per image ({len(images)}), got "
                                 f"{len(per)}")
        if self.task != "sgdet" and boxes is None:
            raise ValueError(f"boxes: the model's data.task is {self.task!r}: give the known "
                             f"objects of every picture, boxes=(N, 4) x1, y1, x2, y2 in image "
                             f"pixels" + (" and labels=(N,)" if self.task == "predcls" else ""))
        out: list[Prediction] = []
        # keep_aspect gives every picture its own input shape: one picture per forward pass.
        step = 1 if self.cfg.eval.keep_aspect else self.batch_size
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            loaded = [self._load(img, start + i) for i, img in enumerate(chunk)]
            box_inputs = self._box_inputs(loaded, start, boxes, labels, len(images) > 1)
            maps, metas = infer_maps(self.model, [a for a, _ in loaded], self.cfg.data.input_size,
                                     self.cfg.data.output_size, scales=self.scales,
                                     flip=self.flip, flip_map=self.info.flip_map,
                                     stacks=self.stacks, device=self.device,
                                     crops=None if crops is None else crops[start:start + step],
                                     keep_aspect=self.cfg.eval.keep_aspect,
                                     project_to_input=self.cfg.eval.project_to_input,
                                     box_inputs=box_inputs)
            for i, (meta, (_, name)) in enumerate(zip(metas, loaded, strict=True)):
                meta["file_name"] = name
                meta["image_id"] = None if image_ids is None else image_ids[start + i]
            out += decode_predictions(maps, metas, self.cfg.eval, self.cfg.data.kind,
                                      self.info.class_names if self.cfg.data.kind ==
                                      "relations" else None, self.info.predicate_names,
                                      task=self.task)
        return out

    def _box_inputs(self, loaded: Sequence[tuple[np.ndarray, str | None]], start: int,
                    boxes: Sequence[Any] | None, labels: Sequence[Any] | None, many: bool
                    ) -> list[dict[str, Any]] | None:
        """Checked known objects of pictures ``start …`` as :func:`preprocess` arguments."""
        if boxes is None and labels is None and self.task == "sgdet":
            return None
        d, c = self.cfg.data, self.cfg.model.num_classes
        out = []
        for i, (arr, _) in enumerate(loaded):
            j = start + i
            b, lab = check_known_objects(None if boxes is None else boxes[j],
                                         None if labels is None else labels[j], arr.shape[:2],
                                         self.task, c,
                                         where=f"images[{j}]: " if many else "")
            out.append({"boxes": b, "labels": lab,
                        "num_classes": c if self.task == "predcls" else 0,
                        "box_sigma": box_channel_sigma(d.sigma, d.input_size, d.output_size)})
        return out
