"""The stacked hourglass with object and interaction heads (docs/design.md §2).

Example:
    >>> model = StackedHourglass(num_stacks=2, channels=128, num_classes=17)
    >>> outs = model(torch.randn(1, 3, 256, 256))          # one StackOutput per stack
    >>> outs[-1].objects.heatmaps.shape
    torch.Size([1, 17, 64, 64])
    >>> early = model(torch.randn(1, 3, 256, 256), stacks=1)  # early exit after stack 1
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from aehg.models.layers import BlockType, make_block

__all__ = ["Hourglass", "InteractionMaps", "ObjectMaps", "StackOutput", "StackedHourglass"]

# The ImageNet statistics the data pipeline normalises with (aehg.data.transforms; written here
# so that the network does not import the data package; tests/models/test_single_pose_model.py
# checks that input_norm "none" undoes that normalisation exactly).
_RGB_MEAN = (0.485, 0.456, 0.406)
_RGB_STD = (0.229, 0.224, 0.225)


@dataclass
class ObjectMaps:
    """Object maps ``[class][embedding]`` of one stack.

    With S = ``slots`` > 1 (docs/design.md "Slots") every map holds S slots, slot-major: the
    class heatmaps of slot k are channels k·C … (k+1)·C − 1, its tag map is ``tags[:, k]``
    (one shared tag map per slot) and its box size channels 2k, 2k + 1.

    Shapes:
        heatmaps: (B, S·C, H, W)
        tags: (B, C, E, H, W) when tags are per class (S = 1 only), else (B, S, E, H, W)
        sizes: (B, 2·S, H, W) box width and height in output pixels, or None
    """

    heatmaps: torch.Tensor
    tags: torch.Tensor
    sizes: torch.Tensor | None = None
    slots: int = 1


@dataclass
class InteractionMaps:
    """Interaction maps ``[link class][source embedding][destination embedding]`` of one stack.

    With S = ``slots`` > 1 every map holds S slots, slot-major: the link heatmaps of slot k are
    channels k·R … (k+1)·R − 1, its embeddings channels k·E … (k+1)·E − 1 of ``src``/``dst``.

    Shapes:
        heatmaps: (B, S·R, H, W)
        src: (B, S·E, H, W)
        dst: (B, S·E, H, W)
    """

    heatmaps: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    slots: int = 1


@dataclass
class StackOutput:
    """Everything one stack predicts; ``interactions`` is None when the model has R = 0."""

    objects: ObjectMaps
    interactions: InteractionMaps | None = None

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> StackOutput:
        """A new StackOutput with ``fn`` applied to every map (absent maps stay None).

        Example:
            >>> first = out.map_tensors(lambda t: t[:1])          # the first image only
            >>> host = out.map_tensors(lambda t: t.float().cpu())
        """
        o = self.objects
        objects = ObjectMaps(fn(o.heatmaps), fn(o.tags), None if o.sizes is None else fn(o.sizes),
                             o.slots)
        inter = None
        if self.interactions is not None:
            i = self.interactions
            inter = InteractionMaps(fn(i.heatmaps), fn(i.src), fn(i.dst), i.slots)
        return StackOutput(objects, inter)


class Hourglass(nn.Module):
    """Recursive hourglass: max-pool down, nearest up, skip branch at every level.

    Args:
        depth: number of down-sampling levels (4 in the papers).
        channels: channels at the top level.
        increase: channels added per level going down (0 in the 2016 paper, 128 in AE).
        block: "residual" (pre-activation bottleneck) or "conv" (3×3 conv + ReLU).

    Shapes:
        x: (B, channels, H, W) -> (B, channels, H, W), H and W divisible by 2**depth
    """

    def __init__(self, depth: int, channels: int, increase: int = 0,
                 block: BlockType = "residual") -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: expected >= 1, got {depth}")
        inner = channels + increase
        self.depth = depth
        self.up1 = make_block(block, channels, channels)
        self.pool = nn.MaxPool2d(2, 2)
        self.low1 = make_block(block, channels, inner)
        self.low2 = (Hourglass(depth - 1, inner, increase, block) if depth > 1
                     else make_block(block, inner, inner))
        self.low3 = make_block(block, inner, channels)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up1(x) + self.up2(self.low3(self.low2(self.low1(self.pool(x)))))


class StackedHourglass(nn.Module):
    """Stacked hourglass emitting object and interaction maps at every stack.

    The stem (7×7/2 conv, block, max-pool, two blocks; ``stem="light"``: conv, max-pool, three
    blocks) brings the input to 1/4 resolution.
    Each stack runs hourglass → block → 1×1 conv-BN-ReLU (3×3 conv-ReLU for the ``conv``
    block, as in the AE code) → one 1×1 head conv whose channels are split into the maps
    below. The next stack receives ``x + merge_features(features) + merge_preds(predictions)``.

    Args:
        num_stacks: number of hourglasses, each supervised.
        channels: feature channels between stacks.
        depth: hourglass depth (input must be divisible by 4·2**depth).
        increase: channels added per hourglass level.
        block: "residual" or "conv".
        num_classes: C, heatmap channels (joint types or object categories).
        embedding_dim: E, tag dimension; 0 gives no tag channels (single-person pose): the
            tags are then an empty (B, C_t, 0, H, W) tensor and there can be no links.
        tag_per_class: one tag map per class (pose) or one shared tag map (objects).
        num_link_classes: R, link (predicate) classes; 0 disables the interaction head.
        box_size: regress box width/height at object centres.
        in_channels: image channels.
        box_channels: extra input channels after the image: the rendered known boxes of
            ``data.task`` sgcls / predcls (docs/design.md §2 "Tasks"); 0 for sgdet and pose.
            The stem takes ``in_channels + box_channels``.
        heatmap_activation: "linear" (MSE loss) or "sigmoid" (focal loss; outputs clamped to
            [1e-4, 1 - 1e-4] so the loss stays finite).
        input_norm: "imagenet" (the first layer takes the ImageNet-normalised input of the
            data pipeline) or "none": the model first maps that input back to RGB in [0, 1],
            which is what the hourglass code's released networks were trained on (exact, no
            state-dict entry; docs/design.md §2).
        object_slots, relation_slots: S_o, S_r slots per pixel of the object / interaction
            maps (1 and 1: one value per pixel, the layout and state dict of a model without
            slots). S_o > 1 needs shared tags (``tag_per_class`` False).
        stem: "paper" (the papers' stem above) or "light": the max-pool before the first
            block, so that all three blocks run at 1/4 resolution (same parameter shapes;
            ~1.25-1.3x cheaper training steps at 128 px input, docs/design.md §2).

    Shapes:
        x: (B, in_channels + box_channels, H_in, W_in) -> list of ``StackOutput`` with maps at
        (H, W) = (H_in / 4, W_in / 4).
    """

    def __init__(self, num_stacks: int = 2, channels: int = 256, depth: int = 4,
                 increase: int = 0, block: BlockType = "residual", num_classes: int = 17,
                 embedding_dim: int = 1, tag_per_class: bool = True, num_link_classes: int = 0,
                 box_size: bool = False, in_channels: int = 3,
                 heatmap_activation: str = "linear", input_norm: str = "imagenet",
                 object_slots: int = 1, relation_slots: int = 1, box_channels: int = 0,
                 stem: str = "paper") -> None:
        super().__init__()
        if stem not in ("paper", "light"):
            raise ValueError(f"stem: expected 'paper' or 'light', got {stem!r}")
        if box_channels < 0:
            raise ValueError(f"box_channels: expected >= 0, got {box_channels}")
        for name, value in (("num_stacks", num_stacks), ("channels", channels),
                            ("num_classes", num_classes), ("in_channels", in_channels)):
            if value < 1:
                raise ValueError(f"{name}: expected >= 1, got {value}")
        if embedding_dim < 0 or (embedding_dim == 0 and num_link_classes):
            raise ValueError(f"embedding_dim: expected >= 1 (or 0 without links: "
                             f"num_link_classes = 0), got {embedding_dim} with num_link_classes "
                             f"{num_link_classes}")
        if input_norm not in ("imagenet", "none") or (input_norm == "none" and in_channels != 3):
            raise ValueError(f"input_norm: expected 'imagenet', or 'none' for RGB input "
                             f"(in_channels 3), got {input_norm!r} with in_channels {in_channels}")
        if num_link_classes < 0 or increase < 0:
            raise ValueError("num_link_classes and increase must be >= 0, got "
                             f"{num_link_classes} and {increase}")
        if not (1 <= object_slots <= 6 and 1 <= relation_slots <= 6):
            raise ValueError(f"object_slots, relation_slots: expected 1..6, got {object_slots}, "
                             f"{relation_slots}")
        if object_slots > 1 and (tag_per_class or embedding_dim < 1):
            raise ValueError(f"object_slots: {object_slots} slots need shared tags "
                             f"(tag_per_class False, embedding_dim >= 1)")
        if relation_slots > 1 and not num_link_classes:
            raise ValueError(f"relation_slots: {relation_slots} slots need num_link_classes >= 1")
        if heatmap_activation not in ("linear", "sigmoid"):
            raise ValueError(f"heatmap_activation: expected 'linear' or 'sigmoid', "
                             f"got {heatmap_activation!r}")
        self.num_stacks = num_stacks
        self.depth = depth
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.tag_per_class = tag_per_class
        self.num_link_classes = num_link_classes
        self.box_size = box_size
        self.heatmap_activation = heatmap_activation
        self.input_norm = input_norm
        self.object_slots = object_slots
        self.relation_slots = relation_slots
        self.image_channels, self.box_channels = in_channels, box_channels
        if input_norm == "none":
            # Undo the pipeline's (x - mean) / std. Not persistent: the state dict (and so every
            # checkpoint) is the same for both settings; the config says which one applies.
            self.register_buffer("input_std", torch.tensor(_RGB_STD).reshape(1, 3, 1, 1),
                                 persistent=False)
            self.register_buffer("input_mean", torch.tensor(_RGB_MEAN).reshape(1, 3, 1, 1),
                                 persistent=False)

        so, sr = object_slots, relation_slots
        self.tag_maps = num_classes if tag_per_class else so  # C_t
        tag_channels = self.tag_maps * embedding_dim
        # Head channel layout: [heatmaps | tags | sizes | link heatmaps | src | dst], each block
        # slot-major; with one slot each this is the layout (and state dict) without slots.
        link_e = sr * embedding_dim if num_link_classes else 0
        self.split_sizes = [so * num_classes, tag_channels, 2 * so if box_size else 0,
                            sr * num_link_classes, link_e, link_e]
        out_channels = sum(self.split_sizes)

        # The papers' stem widths (64, 128) for channels >= 128; narrower models get a stem no
        # wider than their features, where the stem's half-resolution layers would dominate.
        stem1, stem2 = min(64, channels), min(128, channels)
        # Built in the paper's order whatever the stem, so that the default model's random
        # initialisation (and so its training) is the same as before the option existed.
        conv = self._stem_conv(block, in_channels + box_channels, stem1)
        first = make_block(block, stem1, stem2)
        pool = [first, nn.MaxPool2d(2, 2)] if stem == "paper" else [nn.MaxPool2d(2, 2), first]
        self.stem = nn.Sequential(
            *conv,
            *pool,
            make_block(block, stem2, stem2),
            make_block(block, stem2, channels),
        )
        self.hourglasses = nn.ModuleList(
            nn.Sequential(
                Hourglass(depth, channels, increase, block),
                make_block(block, channels, channels),
                self._linear(block, channels),
            )
            for _ in range(num_stacks)
        )
        self.heads = nn.ModuleList(nn.Conv2d(channels, out_channels, 1)
                                   for _ in range(num_stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1)
                                            for _ in range(num_stacks - 1))
        self.merge_preds = nn.ModuleList(nn.Conv2d(out_channels, channels, 1)
                                         for _ in range(num_stacks - 1))
        self._init_heads()

    @staticmethod
    def _stem_conv(block: BlockType, cin: int, cout: int) -> list[nn.Module]:
        conv = nn.Conv2d(cin, cout, 7, stride=2, padding=3, bias=block == "conv")
        if block == "conv":
            return [conv, nn.ReLU(inplace=True)]
        return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    @staticmethod
    def _linear(block: BlockType, channels: int) -> nn.Module:
        if block == "conv":
            # The AE network follows each hourglass with two 3×3 conv-ReLU layers.
            return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                 nn.ReLU(inplace=True))
        return nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False),
                             nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def _init_heads(self) -> None:
        # Heatmap rows (objects and links) start with tiny weights, so an untrained model
        # predicts near-constant heatmaps: near 0 for the linear (MSE) head, near 0.01 for the
        # sigmoid head thanks to the CenterNet prior bias -log((1 - 0.01) / 0.01). Embedding
        # and size rows keep PyTorch's default init: tags that all start at 0 would leave the
        # push term exp(-d^2) with no gradient (it is flat at d = 0) and group nothing for long.
        prior = -math.log((1 - 0.01) / 0.01) if self.heatmap_activation == "sigmoid" else 0.0
        bounds = [0, *itertools.accumulate(self.split_sizes)]
        heat_rows = [(bounds[0], bounds[1]), (bounds[3], bounds[4])]
        with torch.no_grad():
            for head in self.heads:
                for lo, hi in heat_rows:
                    nn.init.normal_(head.weight[lo:hi], std=1e-3)
                    head.bias[lo:hi] = prior

    @property
    def size_divisor(self) -> int:
        """Input height and width must be multiples of this (stem /4, hourglass /2**depth)."""
        return 4 * 2 ** self.depth

    def _activate(self, h: torch.Tensor) -> torch.Tensor:
        if self.heatmap_activation == "sigmoid":
            return torch.sigmoid(h).clamp(1e-4, 1 - 1e-4)
        return h

    def _split(self, pred: torch.Tensor) -> StackOutput:
        b, _, h, w = pred.shape
        heat, tags, sizes, lheat, src, dst = torch.split(pred, self.split_sizes, dim=1)
        e = self.embedding_dim
        objects = ObjectMaps(heatmaps=self._activate(heat),
                             # C_t given explicitly: with E = 0 the size cannot be inferred.
                             tags=tags.reshape(b, self.tag_maps, e, h, w),
                             sizes=sizes if self.box_size else None, slots=self.object_slots)
        inter = None
        if self.num_link_classes:
            inter = InteractionMaps(heatmaps=self._activate(lheat), src=src, dst=dst,
                                    slots=self.relation_slots)
        return StackOutput(objects=objects, interactions=inter)

    def forward(self, x: torch.Tensor, stacks: int | None = None) -> list[StackOutput]:
        """Run the first ``stacks`` stacks (all when None) and return one record per stack.

        Args:
            x: images.
            stacks: early exit after this many stacks (1 … num_stacks).

        Returns:
            ``StackOutput`` per stack run, in order; the last is the final answer.

        Shapes:
            x: (B, in_channels + box_channels, H_in, W_in), H_in and W_in multiples of
            ``size_divisor``; the box channels follow the image's.
        """
        if x.dim() != 4 or x.shape[1] != self.stem[0].in_channels:
            boxes = f" + {self.box_channels} box channels" if self.box_channels else ""
            raise ValueError(f"x: expected shape (B, {self.stem[0].in_channels}, H, W) "
                             f"({self.image_channels} image channels{boxes}), "
                             f"got {tuple(x.shape)}")
        d = self.size_divisor
        if x.shape[-2] % d or x.shape[-1] % d:
            raise ValueError(f"x: input size {x.shape[-2]}x{x.shape[-1]} is not a multiple of "
                             f"{d} (4 for the stem x 2**{self.depth} for the hourglass depth)")
        n = self.num_stacks if stacks is None else int(stacks)
        if not 1 <= n <= self.num_stacks:
            raise ValueError(f"stacks: expected 1..{self.num_stacks}, got {stacks}")
        if self.input_norm == "none":
            rgb = x[:, :3] * self.input_std + self.input_mean
            x = torch.cat([rgb, x[:, 3:]], dim=1) if self.box_channels else rgb
        x = self.stem(x)
        outputs = []
        for i in range(n):
            features = self.hourglasses[i](x)
            pred = self.heads[i](features)
            outputs.append(self._split(pred))
            if i < n - 1:
                x = x + self.merge_features[i](features) + self.merge_preds[i](pred)
        return outputs
