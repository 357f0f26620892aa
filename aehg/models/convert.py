"""Weight converters: the hourglass networks their authors released, as aehg checkpoints
(docs/design.md §2).

Three sources, each read with ``torch.load(weights_only=True)``:

* ``pose-ae-train`` (princeton-vl/pose-ae-train, the original AE network on COCO,
  ``checkpoint.pth.tar``): ``{"state_dict": Trainer(DataParallel(PoseNet(4, 256, 68)))}``,
  keys ``model.module.pre.0.conv.weight`` …; aehg ``block: conv, increase: 128``;
* ``pytorch_stacked_hourglass`` (princeton-vl/pytorch_stacked_hourglass, MPII, 2 or 8 stacks,
  ``checkpoint.pt``): ``PoseNet(nstack, 256, 16)`` in the same wrappers; aehg ``block:
  residual``, single-person pose (E = 0);
* ``mmpose-ae`` (open-mmlab/mmpose ``hourglass_ae_coco_512x512``):
  ``{"state_dict": {"backbone.stem.0.conv.weight", …}}`` of ``HourglassAENet(num_stacks=4,
  out_channels=34)`` (its ``AEMultiStageHead`` with no deconv and kernel 0 has no weights).

The mapping is a table of key patterns per source (:data:`RULES`): a row names the aehg keys
it fills (a regular expression), how, and the source keys it reads (templates filled from
the expression's groups). Every aehg tensor must match a row; every source tensor must be
read by one or match the source's known-unused patterns (:data:`UNUSED`); every shape is
checked. What the rows do besides copying:

* ``minus``: pytorch_stacked_hourglass puts a bias on convolutions that a batch norm follows
  (its ``Conv`` always has one); aehg has none there, and the bias goes into the batch norm's
  running mean: ``BN(Wx + b)`` with mean μ is ``BN(Wx)`` with mean ``μ − b`` (exact in eval).
* ``fold_bn_weight`` / ``fold_bn_bias``: mmpose follows every convolution of the backbone by a
  batch norm (``ConvModule``: conv without bias, BN, ReLU; the merges conv and BN); folded into
  the convolution, ``W · γ/√(σ² + ε)`` and ``β − μ · γ/√(σ² + ε)`` (ε = 1e-5), which is
  exactly aehg's ``block: conv`` network in eval mode. A converted mmpose model is for
  inference and evaluation: it has no batch norm left to fine-tune.
* ``rows`` / ``cols`` / ``merge_weight`` / ``merge_bias``: pose-ae-train's heads have 68
  channels: 17 heatmaps (0–16), 17 tags (17–33) and 34 channels (34–67) that no loss and no
  decoder reads, but that the next stack sees through ``merge_preds`` (a 68-channel input).
  aehg keeps the 34 used rows; for stacks 1–3 the extra channels' path
  ``merge_preds[:, 34:] · outs[34:]`` (a 1×1 conv of a 1×1 conv of the features) is folded into
  ``merge_features`` (exact); the last stack's rows 34–67 feed nothing and are dropped.

Known unused: pytorch_stacked_hourglass's ``skip_layer`` of the residuals whose input and
output widths are equal (built but never run: the identity is the skip; 8.43 M parameters
stored vs 6.56 M used at 2 stacks), and mmpose's ``bn.num_batches_tracked``.

Input: both princeton-vl codes feed RGB / 255 without mean/std; their converted configs say
``model.input_norm: none`` (the model undoes aehg's ImageNet normalisation first). mmpose
normalises with ImageNet mean/std, as aehg does.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aehg.checkpoint import load_checkpoint, save_checkpoint
from aehg.config import Config, ConfigError, config_to_dict, load_config

__all__ = [
    "SOURCES",
    "RULES",
    "UNUSED",
    "ConversionError",
    "Rule",
    "check_config",
    "convert_checkpoint",
    "convert_state_dict",
    "read_source_state",
    "source_overrides",
]

SOURCES = ("pose-ae-train", "pytorch_stacked_hourglass", "mmpose-ae")
BN_EPS = 1e-5  # torch's and mmcv's BatchNorm2d default


class ConversionError(ValueError):
    """A source checkpoint does not fit its table: names the file, the key and the shapes."""


@dataclass(frozen=True)
class Rule:
    """One row of a mapping table.

    Attributes:
        target: regular expression matching whole aehg state-dict keys (named groups).
        op: how the value is computed (see :data:`OPS`).
        sources: source keys read, as ``str.format`` templates over the target's groups.
    """

    target: str
    op: str
    sources: tuple[str, ...]


# --------------------------------------------------------------------------- tables

_BN = ("weight", "bias", "running_mean", "running_var")
_T = r"(?P<t>weight|bias)"
_BN_T = r"(?P<t>weight|bias|running_var|num_batches_tracked)"
# An hourglass level's block, at any depth: up1, low1, low3, or the bottom low2.
_HG_PATH = r"(?P<path>(?:low2\.)*(?:up1|low1|low2|low3))"


def _residual_rules(target: str, source: str) -> list[Rule]:
    """aehg ``Residual`` (body: BN-ReLU-1×1, BN-ReLU-3×3, BN-ReLU-1×1; skip) from
    pytorch_stacked_hourglass's ``Residual`` (bn1, conv1, bn2, conv2, bn3, conv3, skip_layer;
    its convs carry biases)."""
    rows = [
        (r"body\.0\." + _BN_T, "copy", ("bn1.{t}",)),
        (r"body\.0\.running_mean", "copy", ("bn1.running_mean",)),
        (r"body\.2\.weight", "copy", ("conv1.conv.weight",)),
        (r"body\.3\.running_mean", "minus", ("bn2.running_mean", "conv1.conv.bias")),
        (r"body\.3\." + _BN_T, "copy", ("bn2.{t}",)),
        (r"body\.5\.weight", "copy", ("conv2.conv.weight",)),
        (r"body\.6\.running_mean", "minus", ("bn3.running_mean", "conv2.conv.bias")),
        (r"body\.6\." + _BN_T, "copy", ("bn3.{t}",)),
        (r"body\.8\." + _T, "copy", ("conv3.conv.{t}",)),
        (r"skip\." + _T, "copy", ("skip_layer.conv.{t}",)),
    ]
    return [Rule(rf"{target}\.{t}", op, tuple(f"{source}.{s}" for s in srcs))
            for t, op, srcs in rows]


def _conv_bn_rules(target: str, source: str) -> list[Rule]:
    """aehg conv (weight, bias) from an mmcv ``ConvModule`` (conv without bias, then BN)."""
    bn = tuple(f"{source}.bn.{k}" for k in _BN)
    return [Rule(rf"{target}\.weight", "fold_bn_weight", (f"{source}.conv.weight", *bn)),
            Rule(rf"{target}\.bias", "fold_bn_bias", bn)]


_POSE_AE_TRAIN = [
    Rule(r"stem\.0\." + _T, "copy", ("pre.0.conv.{t}",)),
    Rule(r"stem\.2\.0\." + _T, "copy", ("pre.1.conv.{t}",)),
    Rule(r"stem\.4\.0\." + _T, "copy", ("pre.3.conv.{t}",)),
    Rule(r"stem\.5\.0\." + _T, "copy", ("pre.4.conv.{t}",)),
    Rule(rf"hourglasses\.(?P<i>\d+)\.0\.{_HG_PATH}\.0\." + _T, "copy",
         ("features.{i}.0.{path}.conv.{t}",)),
    Rule(r"hourglasses\.(?P<i>\d+)\.1\.0\." + _T, "copy", ("features.{i}.1.conv.{t}",)),
    Rule(r"hourglasses\.(?P<i>\d+)\.2\.0\." + _T, "copy", ("features.{i}.2.conv.{t}",)),
    Rule(r"heads\.(?P<i>\d+)\." + _T, "rows", ("outs.{i}.conv.{t}",)),
    Rule(r"merge_preds\.(?P<i>\d+)\.weight", "cols", ("merge_preds.{i}.conv.conv.weight",)),
    Rule(r"merge_preds\.(?P<i>\d+)\.bias", "copy", ("merge_preds.{i}.conv.conv.bias",)),
    Rule(r"merge_features\.(?P<i>\d+)\.weight", "merge_weight",
         ("merge_features.{i}.conv.conv.weight", "merge_preds.{i}.conv.conv.weight",
          "outs.{i}.conv.weight")),
    Rule(r"merge_features\.(?P<i>\d+)\.bias", "merge_bias",
         ("merge_features.{i}.conv.conv.bias", "merge_preds.{i}.conv.conv.weight",
          "outs.{i}.conv.bias")),
]

_PYTORCH_STACKED_HOURGLASS = [
    Rule(r"stem\.0\.weight", "copy", ("pre.0.conv.weight",)),
    Rule(r"stem\.1\.running_mean", "minus", ("pre.0.bn.running_mean", "pre.0.conv.bias")),
    Rule(r"stem\.1\." + _BN_T, "copy", ("pre.0.bn.{t}",)),
    *_residual_rules(r"stem\.3", "pre.1"),
    *_residual_rules(r"stem\.5", "pre.3"),
    *_residual_rules(r"stem\.6", "pre.4"),
    *_residual_rules(rf"hourglasses\.(?P<i>\d+)\.0\.{_HG_PATH}", "hgs.{i}.0.{path}"),
    *_residual_rules(r"hourglasses\.(?P<i>\d+)\.1", "features.{i}.0"),
    Rule(r"hourglasses\.(?P<i>\d+)\.2\.0\.weight", "copy", ("features.{i}.1.conv.weight",)),
    Rule(r"hourglasses\.(?P<i>\d+)\.2\.1\.running_mean", "minus",
         ("features.{i}.1.bn.running_mean", "features.{i}.1.conv.bias")),
    Rule(r"hourglasses\.(?P<i>\d+)\.2\.1\." + _BN_T, "copy", ("features.{i}.1.bn.{t}",)),
    Rule(r"heads\.(?P<i>\d+)\." + _T, "copy", ("outs.{i}.conv.{t}",)),
    Rule(r"merge_features\.(?P<i>\d+)\." + _T, "copy", ("merge_features.{i}.conv.conv.{t}",)),
    Rule(r"merge_preds\.(?P<i>\d+)\." + _T, "copy", ("merge_preds.{i}.conv.conv.{t}",)),
]

_MMPOSE_AE = [
    *_conv_bn_rules(r"stem\.0", "stem.0"),
    *_conv_bn_rules(r"stem\.2\.0", "stem.1"),
    *_conv_bn_rules(r"stem\.4\.0", "stem.3"),
    *_conv_bn_rules(r"stem\.5\.0", "stem.4"),
    *_conv_bn_rules(rf"hourglasses\.(?P<i>\d+)\.0\.{_HG_PATH}\.0",
                    "hourglass_modules.{i}.0.{path}"),
    *_conv_bn_rules(r"hourglasses\.(?P<i>\d+)\.1\.0", "hourglass_modules.{i}.1"),
    *_conv_bn_rules(r"hourglasses\.(?P<i>\d+)\.2\.0", "hourglass_modules.{i}.2"),
    Rule(r"heads\.(?P<i>\d+)\." + _T, "copy", ("out_convs.{i}.conv.{t}",)),
    *_conv_bn_rules(r"merge_preds\.(?P<i>\d+)", "remap_out_convs.{i}"),
    *_conv_bn_rules(r"merge_features\.(?P<i>\d+)", "remap_feature_convs.{i}"),
]

RULES: dict[str, list[Rule]] = {
    "pose-ae-train": _POSE_AE_TRAIN,
    "pytorch_stacked_hourglass": _PYTORCH_STACKED_HOURGLASS,
    "mmpose-ae": _MMPOSE_AE,
}
# Source keys no aehg tensor needs (regular expressions over whole keys).
UNUSED: dict[str, tuple[str, ...]] = {
    "pose-ae-train": (),
    # Equal-width residuals: the conversion checks that they are square 1×1 convolutions.
    "pytorch_stacked_hourglass": (r".*\.skip_layer\.conv\.(weight|bias)",),
    "mmpose-ae": (r".*\.bn\.num_batches_tracked",),
}
# Wrappers around the network's own keys in each source's checkpoint.
_PREFIXES = {
    "pose-ae-train": ("model.module.", "module.", "model."),
    "pytorch_stacked_hourglass": ("model.module.", "module.", "model."),
    "mmpose-ae": ("backbone.",),
}
# Keys that tell the sources apart (and aehg's own checkpoints from all three).
_SIGNATURE = {
    "pose-ae-train": "pre.1.conv.weight",
    "pytorch_stacked_hourglass": "pre.1.bn1.weight",
    "mmpose-ae": "stem.0.bn.weight",
}
# What the source's network needs of the aehg model config.
_NEEDS = {
    "pose-ae-train": {"block": "conv", "input_norm": "none"},
    "pytorch_stacked_hourglass": {"block": "residual", "input_norm": "none"},
    "mmpose-ae": {"block": "conv", "input_norm": "imagenet"},
}
_HEADS = {"pose-ae-train": "outs", "pytorch_stacked_hourglass": "outs",
          "mmpose-ae": "out_convs"}


# --------------------------------------------------------------------------- operations


class _Context:
    """What an operation may read: the source tensors by key, the aehg shapes, messages."""

    def __init__(self, source: str, state: Mapping[str, torch.Tensor],
                 target: Mapping[str, torch.Tensor], where: str) -> None:
        self.source = source
        self.state = state
        self.target = target
        self.where = where

    def fail(self, msg: str) -> ConversionError:
        return ConversionError(f"{self.where}: {msg}")

    def shape(self, key: str, value: torch.Tensor, expected: tuple[Any, ...], aehg_key: str
              ) -> None:
        if tuple(value.shape) != tuple(expected):
            raise self.fail(f"key {key!r} has shape {tuple(value.shape)}, expected "
                            f"{tuple(expected)} for aehg {aehg_key!r} (another architecture "
                            f"or config?)")

    @property
    def head_channels(self) -> int:
        """aehg's head width (heatmaps + tags): the rows pose-ae-train's heads keep."""
        return int(self.target["heads.0.weight"].shape[0])


def _op_copy(ctx: _Context, key: str, names: list[str], tensors: list[torch.Tensor]
             ) -> torch.Tensor:
    ctx.shape(names[0], tensors[0], ctx.target[key].shape, key)
    return tensors[0]


def _op_minus(ctx: _Context, key: str, names: list[str], tensors: list[torch.Tensor]
              ) -> torch.Tensor:
    for n, t in zip(names, tensors, strict=True):
        ctx.shape(n, t, ctx.target[key].shape, key)
    return tensors[0].double() - tensors[1].double()


def _bn_scale(ctx: _Context, key: str, names: list[str], bn: list[torch.Tensor],
              channels: int) -> torch.Tensor:
    for n, t in zip(names, bn, strict=True):
        ctx.shape(n, t, (channels,), key)
    gamma, _, _, var = (t.double() for t in bn)
    return gamma / torch.sqrt(var + BN_EPS)


def _op_fold_bn_weight(ctx: _Context, key: str, names: list[str], tensors: list[torch.Tensor]
                       ) -> torch.Tensor:
    ref = ctx.target[key].shape
    ctx.shape(names[0], tensors[0], ref, key)
    scale = _bn_scale(ctx, key, names[1:], tensors[1:], ref[0])
    return tensors[0].double() * scale.reshape(-1, 1, 1, 1)


def _op_fold_bn_bias(ctx: _Context, key: str, names: list[str], tensors: list[torch.Tensor]
                     ) -> torch.Tensor:
    scale = _bn_scale(ctx, key, names, tensors, ctx.target[key].shape[0])
    beta, mean = tensors[1].double(), tensors[2].double()
    return beta - mean * scale


def _extra_channels(ctx: _Context, key: str, name: str, value: torch.Tensor, dim: int) -> int:
    """The number of head channels beyond aehg's (pose-ae-train: 68 − 34 = 34)."""
    k = ctx.head_channels
    if value.dim() < 2 or value.shape[dim] < k:
        raise ctx.fail(f"key {name!r} has shape {tuple(value.shape)}: expected at least {k} "
                       f"head channels in dimension {dim} for aehg {key!r} (heatmaps + tags)")
    return int(value.shape[dim]) - k


def _op_rows(ctx: _Context, key: str, names: list[str], tensors: list[torch.Tensor]
             ) -> torch.Tensor:
    ref = ctx.target[key].shape
    value = tensors[0]
    if value.dim() != len(ref) or tuple(value.shape[1:]) != tuple(ref[1:]) or \
            value.shape[0] < ref[0]:
        raise ctx.fail(f"key {names[0]!r} has shape {tuple(value.shape)}, expected "
                       f"(≥{ref[0]}, {', '.join(str(s) for s in ref[1:])}) for aehg {key!r} "
                       f"(its first {ref[0]} channels: heatmaps, then tags)")
    return value[:ref[0]]


def _op_cols(ctx: _Context, key: str, names: list[str], tensors: list[torch.Tensor]
             ) -> torch.Tensor:
    ref = ctx.target[key].shape
    value = tensors[0]
    _extra_channels(ctx, key, names[0], value, 1)
    ctx.shape(names[0], value[:, :ref[1]], ref, key)
    return value[:, :ref[1]]


def _merge_parts(ctx: _Context, key: str, names: list[str], tensors: list[torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``merge_preds[:, k:]`` and ``outs[k:]`` as matrices (k = aehg's head channels)."""
    k = ctx.head_channels
    merge, outs = tensors[1], tensors[2]
    extra = _extra_channels(ctx, key, names[1], merge, 1)
    if outs.shape[0] != k + extra:
        raise ctx.fail(f"key {names[2]!r} has {outs.shape[0]} output channels but "
                       f"{names[1]!r} takes {k + extra} (they must match)")
    extra_out = outs[k:].double()
    return merge[:, k:].double().flatten(1), \
        extra_out.flatten(1) if extra_out.dim() > 1 else extra_out


def _op_merge_weight(ctx: _Context, key: str, names: list[str], tensors: list[torch.Tensor]
                     ) -> torch.Tensor:
    ref = ctx.target[key].shape
    ctx.shape(names[0], tensors[0], ref, key)
    m, o = _merge_parts(ctx, key, names, tensors)
    ctx.shape(names[2], tensors[2][:ctx.head_channels], ctx.target["heads.0.weight"].shape,
              "heads.0.weight")
    return tensors[0].double() + (m @ o).reshape(ref)


def _op_merge_bias(ctx: _Context, key: str, names: list[str], tensors: list[torch.Tensor]
                   ) -> torch.Tensor:
    ctx.shape(names[0], tensors[0], ctx.target[key].shape, key)
    m, o = _merge_parts(ctx, key, names, tensors)
    return tensors[0].double() + m @ o


OPS: dict[str, Callable[[_Context, str, list[str], list[torch.Tensor]], torch.Tensor]] = {
    "copy": _op_copy,
    "minus": _op_minus,
    "fold_bn_weight": _op_fold_bn_weight,
    "fold_bn_bias": _op_fold_bn_bias,
    "rows": _op_rows,
    "cols": _op_cols,
    "merge_weight": _op_merge_weight,
    "merge_bias": _op_merge_bias,
}


# --------------------------------------------------------------------------- conversion


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")


def convert_state_dict(source: str, state: Mapping[str, torch.Tensor],
                       target: Mapping[str, torch.Tensor], where: str = "checkpoint"
                       ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fill every tensor of an aehg state dict from a source network's state dict.

    Args:
        source: one of :data:`SOURCES`.
        state: the source network's own keys (wrappers already stripped:
            :func:`read_source_state`).
        target: the aehg model's state dict (names, shapes and dtypes to fill).
        where: what to name in errors (the checkpoint file).

    Returns:
        The converted state dict (target dtypes) and the source keys left unused (each
        matching :data:`UNUSED`).

    Raises:
        ConversionError: an aehg key no row covers, a missing source key, a shape that does
            not fit, a source key that is neither read nor known-unused, or a known-unused
            ``skip_layer`` that is not an equal-width 1×1 convolution; each names the key.
    """
    _check_source(source)
    ctx = _Context(source, state, target, where)
    rules = [(re.compile(r.target), r) for r in RULES[source]]
    out: dict[str, torch.Tensor] = {}
    read: set[str] = set()
    for key, ref in target.items():
        found = next(((m, r) for pat, r in rules if (m := pat.fullmatch(key))), None)
        if found is None:
            raise ctx.fail(f"aehg key {key!r} has no row in the {source} table (a model part "
                           f"that {source} networks do not have: check the config)")
        match, rule = found
        names = [t.format(**match.groupdict()) for t in rule.sources]
        tensors = []
        for name in names:
            if name not in state:
                if name.endswith("num_batches_tracked"):
                    # Checkpoints of PyTorch < 0.4.1 have no counter; it only matters for a
                    # momentum of None.
                    tensors.append(torch.zeros((), dtype=ref.dtype))
                    continue
                raise ctx.fail(f"missing key {name!r} (needed for aehg {key!r}; not a {source} "
                               f"network of this config's shape?)")
            tensors.append(state[name])
            read.add(name)
        value = OPS[rule.op](ctx, key, names, tensors)
        # Folds can turn a broken statistic (a negative running variance) into NaN; copies
        # keep the source's values as they are.
        if rule.op != "copy" and not value.is_meta and not torch.isfinite(value).all():
            raise ctx.fail(f"aehg {key!r} computed from {', '.join(names)} is not finite")
        out[key] = value.to(ref.dtype).reshape(ref.shape).contiguous()
    unused = sorted(set(state) - read)
    patterns = [re.compile(p) for p in UNUSED[source]]
    unexpected = [k for k in unused if not any(p.fullmatch(k) for p in patterns)]
    if unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:6]) + (" …" if len(unexpected) > 6 else "")
        raise ctx.fail(f"{len(unexpected)} unexpected key(s) that no row reads and that are not "
                       f"known-unused for {source}: {shown} (more stacks or another layout "
                       f"than the config's?)")
    for k in unused:
        if ".skip_layer." in k and k.endswith("weight"):
            w = state[k]
            if w.dim() != 4 or w.shape[0] != w.shape[1] or tuple(w.shape[2:]) != (1, 1):
                raise ctx.fail(f"key {k!r} has shape {tuple(w.shape)}: an unused skip_layer "
                               f"must be an equal-width 1×1 convolution (aehg has a projection "
                               f"skip wherever the widths differ)")
    return out, unused


def read_source_state(path: str | os.PathLike[str], source: str) -> dict[str, torch.Tensor]:
    """The network tensors of a released checkpoint, with the wrappers' prefixes stripped.

    Loaded with ``torch.load(weights_only=True)``; the state dict is ``checkpoint["state_dict"]``
    (all three sources) or the file itself when it is a bare state dict.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable as a weights-only torch file.
        ConversionError: no state dict, or a checkpoint of another kind (the message says which
            source it looks like, or that it is an aehg checkpoint already).
    """
    _check_source(source)
    ckpt = load_checkpoint(path)
    where = f"checkpoint {path}"
    if "model" in ckpt and "config" in ckpt:
        raise ConversionError(f"{where}: is an aehg checkpoint already ('model' and 'config' "
                              f"entries); use it as it is")
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, Mapping) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{where}: expected a 'state_dict' entry of tensors (or a bare "
                              f"state dict), found keys {sorted(ckpt)[:8]}")
    found = {}
    for name in SOURCES:
        stripped = {_strip(k, _PREFIXES[name]): v for k, v in state.items()}
        if _SIGNATURE[name] in stripped:
            found[name] = stripped
    if source not in found:
        other = next(iter(found), None)
        looks = f"it looks like a {other} checkpoint (use --from {other})" if other else \
            "it matches none of " + ", ".join(SOURCES)
        raise ConversionError(f"{where}: not a {source} checkpoint: no key "
                              f"{_SIGNATURE[source]!r} (after stripping "
                              f"{' / '.join(_PREFIXES[source])}); {looks}")
    return found[source]


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    for p in prefixes:
        if key.startswith(p):
            return key[len(p):]
    return key


def source_overrides(source: str, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Config overrides the source network implies: its stack count and its input
    normalisation (``["model.num_stacks=8", "model.input_norm=none"]``)."""
    _check_source(source)
    head = _HEADS[source]
    stacks = {int(m.group(1)) for k in state if (m := re.match(rf"{head}\.(\d+)\.", k))}
    if not stacks or stacks != set(range(len(stacks))):
        raise ConversionError(f"{source} state dict: expected heads {head}.0 … {head}.N-1, "
                              f"found {sorted(stacks)}")
    return [f"model.num_stacks={len(stacks)}",
            f"model.input_norm={_NEEDS[source]['input_norm']}"]


def check_config(source: str, cfg: Config, state: Mapping[str, torch.Tensor], where: str
                 ) -> None:
    """The model fields a source fixes: block, input normalisation and the stack count.

    Raises:
        ConfigError: names the key, the value the source needs and the config's.
    """
    wanted = dict(_NEEDS[source])
    stacks = int(source_overrides(source, state)[0].split("=")[1])
    wanted["num_stacks"] = stacks
    for name, want in wanted.items():
        have = getattr(cfg.model, name)
        if have != want:
            raise ConfigError(f"model.{name}: {where} ({source}) needs {want!r}, the config "
                              f"says {have!r}")


def convert_checkpoint(source: str, checkpoint: str | os.PathLike[str],
                       output: str | os.PathLike[str], config: str | os.PathLike[str],
                       overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Convert a released checkpoint into an aehg checkpoint with its config inside.

    The config is ``config`` (a YAML file) with the overrides the source implies
    (:func:`source_overrides`: its stack count and input normalisation), then ``overrides``.
    The output (written atomically) holds ``model`` (the state dict), ``config`` and
    ``converted_from`` (source, file, unused keys); it loads with ``weights_only=True`` and
    ``tools/infer.py`` / ``tools/eval.py`` / :class:`aehg.inference.Predictor` take it as it is.

    Returns:
        ``{"source", "file", "output", "overrides", "tensors", "parameters", "unused"}``.

    Raises:
        ConfigError: the config does not fit the source (block, input_norm, num_stacks).
        ConversionError, ValueError, FileNotFoundError: see :func:`read_source_state` and
            :func:`convert_state_dict`.
    """
    from aehg.models import build_model

    where = f"checkpoint {checkpoint}"
    state = read_source_state(checkpoint, source)
    implied = source_overrides(source, state)
    cfg = load_config(config, [*implied, *overrides])
    check_config(source, cfg, state, where)
    model = build_model(cfg.model)
    converted, unused = convert_state_dict(source, state, model.state_dict(), where)
    model.load_state_dict(converted, strict=True)
    save_checkpoint(output, {
        "model": converted, "config": config_to_dict(cfg),
        "converted_from": {"source": source, "file": str(Path(checkpoint)),
                           "unused": unused},
    })
    params = sum(int(math.prod(v.shape)) for k, v in converted.items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    return {"source": source, "file": str(checkpoint), "output": str(output),
            "overrides": implied, "tensors": len(converted), "parameters": params,
            "unused": unused}
