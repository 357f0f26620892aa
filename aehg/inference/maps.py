"""Test-time maps: flip test, multi-scale and early exit around the network's forward pass
(docs/design.md §8).

Flip test: the mirrored picture runs in the same batch, its maps are mirrored back (class
channels permuted by the flip map), heatmaps averaged and embeddings concatenated along E.
Multi-scale: heatmaps of every scale are resized onto the grid of the scale closest to 1 and
averaged; that scale's embeddings and box sizes are used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aehg.inference.preprocess import input_size_for_scale, preprocess
from aehg.models import InteractionMaps, ObjectMaps, StackOutput

__all__ = ["flip_back", "forward_maps", "infer_maps", "maps_to_cpu", "merge_flip",
           "project_maps"]


def flip_back(out: StackOutput, flip_map: np.ndarray | Sequence[int]) -> StackOutput:
    """Maps of a horizontally flipped input brought back to the unflipped frame.

    Every map is mirrored along W (exact on the output grid with the pixel-centre convention)
    and class channels (heatmaps, per-class tags) are permuted with ``flip_map``.
    """
    perm = torch.as_tensor(np.asarray(flip_map, dtype=np.int64),
                           device=out.objects.heatmaps.device)
    obj = out.objects
    if obj.slots > 1:  # the class permutation within every slot (docs/design.md "Slots")
        c = obj.heatmaps.shape[1] // obj.slots
        perm = (torch.arange(obj.slots, device=perm.device)[:, None] * c + perm).reshape(-1)
    tags = obj.tags.flip(-1)
    if tags.shape[1] == obj.heatmaps.shape[1] and tags.shape[1] > 1:
        tags = tags[:, perm]
    objects = ObjectMaps(heatmaps=obj.heatmaps.flip(-1)[:, perm], tags=tags,
                         sizes=None if obj.sizes is None else obj.sizes.flip(-1),
                         slots=obj.slots)
    inter = None
    if out.interactions is not None:
        i = out.interactions
        inter = InteractionMaps(heatmaps=i.heatmaps.flip(-1), src=i.src.flip(-1),
                                dst=i.dst.flip(-1), slots=i.slots)
    return StackOutput(objects=objects, interactions=inter)


def merge_flip(a: StackOutput, b: StackOutput) -> StackOutput:
    """Heatmaps (and sizes) averaged, embeddings concatenated along E (E doubles).

    Shapes:
        tags (B, C_t, E, H, W) -> (B, C_t, 2E, H, W); src/dst (B, E, H, W) -> (B, 2E, H, W)
    """
    oa, ob = a.objects, b.objects
    sizes = None if oa.sizes is None else (oa.sizes + ob.sizes) / 2
    objects = ObjectMaps(heatmaps=(oa.heatmaps + ob.heatmaps) / 2,
                         tags=torch.cat([oa.tags, ob.tags], dim=2), sizes=sizes,
                         slots=oa.slots)
    inter = None
    if a.interactions is not None:
        ia, ib = a.interactions, b.interactions

        def cat(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # Per slot (slot-major channels, docs/design.md "Slots"): [E of x | E of y].
            n, _, h, w = x.shape
            return torch.cat([x.reshape(n, ia.slots, -1, h, w), y.reshape(n, ia.slots, -1, h, w)],
                             dim=2).reshape(n, -1, h, w)

        inter = InteractionMaps(heatmaps=(ia.heatmaps + ib.heatmaps) / 2,
                                src=cat(ia.src, ib.src), dst=cat(ia.dst, ib.dst),
                                slots=ia.slots)
    return StackOutput(objects=objects, interactions=inter)


def forward_maps(model: nn.Module, x: torch.Tensor, stacks: int | None, flip: bool,
                 flip_map: np.ndarray) -> StackOutput:
    """One forward pass (flipped copy in the same batch when ``flip``); the last stack run.

    The input runs in ``channels_last`` (convert the model with
    ``model.to(memory_format=torch.channels_last)`` to avoid a weight reorder per call).

    Shapes:
        x: (B, 3, H_in, W_in) -> maps of B images (tags and link embeddings 2E wide with flip)
    """
    # channels_last is the layout oneDNN (CPU) and cuDNN convolutions run fastest in; the maps
    # come out in it too and every consumer indexes them, so nothing needs converting back.
    cl = torch.channels_last
    if not flip:
        return model(x.contiguous(memory_format=cl), stacks=stacks)[-1]
    b = x.shape[0]
    out = model(torch.cat([x, x.flip(-1)]).contiguous(memory_format=cl), stacks=stacks)[-1]
    first = out.map_tensors(lambda t: t[:b])
    second = flip_back(out.map_tensors(lambda t: t[b:]), flip_map)
    return merge_flip(first, second)


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # align_corners=False matches the pixel-centre convention: with both inputs centred on the
    # image, output pixel i of the base grid sits at (i + 0.5)·r − 0.5 of a grid r times larger.
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def infer_maps(model: nn.Module, images: Sequence[np.ndarray], input_size: int,
               output_size: int, *, scales: Sequence[float] = (1.0,), flip: bool = False,
               flip_map: np.ndarray | Sequence[int] | None = None, stacks: int | None = None,
               device: str | torch.device = "cpu",
               crops: Sequence[tuple[Any, float] | None] | None = None,
               keep_aspect: bool = False, project_to_input: bool = False,
               box_inputs: Sequence[dict[str, Any]] | None = None
               ) -> tuple[StackOutput, list[dict]]:
    """Run the model on pictures with the test-time options and merge the maps.

    The base scale is the one closest to 1: its grid is where decoding happens and its tags
    (and link embeddings, box sizes) are used; heatmaps of the other scales are resized onto it
    and averaged with it (sum over scales / number of scales, so thresholds keep their meaning).
    With ``flip`` every scale also runs on the mirrored input, flipped back (class channels
    permuted by ``flip_map``); heatmaps are averaged and tags concatenated along E.

    Args:
        model: a StackedHourglass (in eval mode).
        images: BGR uint8 pictures.
        input_size: network input side at scale 1.
        output_size: output-map side at scale 1.
        scales: test scales.
        flip: flip test.
        flip_map: channel permutation of a flip (needed with ``flip``; a model whose classes
            do not swap passes the identity).
        stacks: early exit after this many stacks (None: all).
        device: where the model runs.
        crops: per image a person's ``(center, scale)`` to crop around (single-person pose,
            :func:`preprocess`), or None for the whole picture.
        keep_aspect: short side to the input size, aspect kept (:func:`preprocess`); the
            pictures of one call must then give one input shape (pass one picture per call).
        project_to_input: upsample every map (bicubic, ``align_corners=False``) by the stride
            to input resolution before decoding; ``transform`` of the metas then maps original
            pixels to input pixels and box sizes are scaled alike.
        box_inputs: per image the known objects of sgcls / predcls, the ``boxes``,
            ``labels``, ``num_classes`` and ``box_sigma`` arguments of :func:`preprocess`
            (docs/design.md §2 "Tasks"); None: RGB input only.

    Returns:
        The merged maps (on the CPU) and per image the meta dict of :func:`preprocess` at the
        base scale (``transform`` maps original pixels to the merged maps' grid).

    Shapes:
        -> heatmaps (B, C, H, W), tags (B, C_t, E·(2 if flip else 1), H, W), …
    """
    if crops is not None and len(crops) != len(images):
        raise ValueError(f"crops: expected one (center, scale) or None per image "
                         f"({len(images)}), got {len(crops)}")
    person = [{} if c is None else {"center": c[0], "scale": c[1]}
              for c in (crops if crops is not None else [None] * len(images))]
    if box_inputs is not None:  # preprocess renders the known boxes at every scale
        if len(box_inputs) != len(images):
            raise ValueError(f"box_inputs: expected one per image ({len(images)}), got "
                             f"{len(box_inputs)}")
        person = [{**p, **k} for p, k in zip(person, box_inputs, strict=True)]
    if not scales:
        raise ValueError("scales: expected at least one scale")
    divisor = getattr(model, "size_divisor", 1)
    stride = input_size // output_size
    base = min(range(len(scales)), key=lambda i: (abs(math.log(scales[i])), i))
    num_classes = getattr(model, "num_classes", None)
    if flip and flip_map is None:
        raise ValueError("flip_map: the flip test needs the left/right swap of the classes "
                         "(the identity for classes that do not swap)")
    fm = np.asarray(flip_map if flip_map is not None else np.arange(num_classes or 0))
    merged: StackOutput | None = None
    heat_sum: torch.Tensor | None = None
    link_sum: torch.Tensor | None = None
    metas: list[dict] = []
    order = [base] + [i for i in range(len(scales)) if i != base]
    for i in order:
        size_in = input_size_for_scale(input_size, scales[i], divisor)
        size_out = size_in // stride
        batch = [preprocess(img, size_in, size_out, keep_aspect=keep_aspect, divisor=divisor,
                            **p) for img, p in zip(images, person, strict=True)]
        if len({tuple(b[0].shape) for b in batch}) > 1:
            raise ValueError("keep_aspect: pictures of different aspect ratios give inputs of "
                             "different shapes; pass one picture per call")
        x = torch.stack([b[0] for b in batch]).to(device)
        out = forward_maps(model, x, stacks, flip, fm)
        if i == base:
            merged = out
            metas = [b[1] for b in batch]
            heat_sum = out.objects.heatmaps.float()
            if out.interactions is not None:
                link_sum = out.interactions.heatmaps.float()
        else:
            grid = tuple(merged.objects.heatmaps.shape[-2:])
            heat_sum = heat_sum + _resize(out.objects.heatmaps.float(), grid)
            if link_sum is not None:
                link_sum = link_sum + _resize(out.interactions.heatmaps.float(), grid)
    n = len(scales)
    host = maps_to_cpu(merged)
    host.objects.heatmaps = (heat_sum / n).cpu()
    if host.interactions is not None:
        host.interactions.heatmaps = (link_sum / n).cpu()
    if project_to_input:
        host = project_maps(host, stride)
        for meta in metas:
            meta["transform"] = meta["input_transform"]
    return host, metas


def project_maps(out: StackOutput, stride: int) -> StackOutput:
    """Every map upsampled ``stride`` times (bicubic, ``align_corners=False``).

    With the pixel-centre convention (docs/design.md §7) the upsampled grid is the input grid:
    pixel j of it sits at ``(j + 0.5) / stride - 0.5`` on the map, exactly where input pixel j
    lands. Bicubic, not bilinear: a bilinear maximum always falls between two samples of equal
    height around a map pixel, a plateau NMS would keep twice. Box sizes (map pixels) are
    multiplied by ``stride``.

    Shapes:
        (B, K, H, W) -> (B, K, stride·H, stride·W); tags (B, C_t, E, H, W) likewise
    """
    def up(t: torch.Tensor) -> torch.Tensor:
        lead, (h, w) = t.shape[:-2], t.shape[-2:]
        size = (h * stride, w * stride)
        flat = t.reshape(lead[0], -1, h, w)
        if flat.shape[1] == 0:
            return t.new_zeros((*lead, *size))
        return F.interpolate(flat, size=size, mode="bicubic",
                             align_corners=False).reshape(*lead, *size)

    projected = out.map_tensors(up)
    if projected.objects.sizes is not None:
        projected.objects.sizes = projected.objects.sizes * stride
    return projected


def maps_to_cpu(out: StackOutput) -> StackOutput:
    """Every map as float32 on the host (what the decoders read fastest)."""
    return out.map_tensors(lambda t: t.float().cpu())
