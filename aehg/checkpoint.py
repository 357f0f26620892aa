"""Checkpoints: atomic writes, safe loads, and weight loading that names what does not fit.

A layer below both the training engine and inference (docs/design.md §9): running a trained
model needs this module, not the trainer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aehg.io import atomic_write

__all__ = ["load_checkpoint", "load_model_weights", "save_checkpoint", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP / DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) \
        else model


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """``torch.save`` ``state`` to ``path`` atomically (temp file, then ``os.replace``)."""
    return atomic_write(path, lambda f: torch.save(dict(state), f))


def load_checkpoint(path: str | os.PathLike[str],
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"checkpoint {path}: cannot be read as a weights-only torch file "
                         f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path}: expected a dict, got {type(obj).__name__}")
    return obj


def _check_input_norm(model: nn.Module, checkpoint: Mapping[str, Any], source: str) -> None:
    """The stored config's ``model.input_norm`` (no state-dict entry shows it) must be the
    model's: weights trained on RGB / 255 given ImageNet-normalised input fail silently."""
    stored = checkpoint.get("config")
    if not isinstance(stored, Mapping) or not isinstance(stored.get("model"), Mapping):
        return
    want = stored["model"].get("input_norm", "imagenet")
    have = getattr(model, "input_norm", "imagenet")
    if want != have:
        raise ValueError(f"{source} was made with model.input_norm {want!r} (its stored "
                         f"config), but this model has {have!r}: pass model.input_norm={want} "
                         f"or use the checkpoint's config")


def load_model_weights(model: nn.Module, checkpoint: Mapping[str, Any],
                       source: str = "checkpoint", entry: str = "model") -> None:
    """Load a checkpoint's ``entry`` (or a bare state dict) into ``model``, strictly.

    ``"model"`` holds the weights to run: with ``train.ema_decay`` the moving average, whose
    raw counterpart (for resuming) is ``"train_model"`` (docs/design.md §9).

    Raises:
        ValueError: keys are missing or unexpected, or shapes differ; the message names them
            (typically a checkpoint of another architecture); or the checkpoint's stored config
            has another ``model.input_norm`` than the model.
    """
    state = checkpoint.get(entry, checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError(f"{source}: {entry!r} entry is not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = unwrap_model(model)
    _check_input_norm(target, checkpoint, source)
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state)
                        if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        parts = []
        for name, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
            if keys:
                parts.append(f"{name} ({len(keys)}): {', '.join(keys[:8])}"
                             + (" …" if len(keys) > 8 else ""))
        if mismatched:
            shown = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                     for k in mismatched[:8]]
            parts.append(f"shape mismatch ({len(mismatched)}): {'; '.join(shown)}"
                         + (" …" if len(mismatched) > 8 else ""))
        raise ValueError(f"{source} does not fit this model (another architecture?): "
                         + " | ".join(parts))
    target.load_state_dict(state, strict=True)
