"""The validation transform for inference: picture → normalised network input and the affine
transforms back to the picture (docs/design.md §7, §8)."""

from __future__ import annotations

import math

import numpy as np
import torch

from aehg.data.box_channels import render_box_channels
from aehg.data.transforms import (
    affine_matrix,
    compose,
    crop_matrix,
    input_to_output,
    normalize_image,
    transform_boxes,
    warp_image,
)

__all__ = ["aspect_input_shape", "input_size_for_scale", "preprocess"]


def input_size_for_scale(input_size: int, scale: float, divisor: int) -> int:
    """Square input side at ``scale``: ``input_size · scale`` rounded to a multiple of ``divisor``
    (at least one ``divisor``)."""
    return max(divisor, int(round(input_size * scale / divisor)) * divisor)


def aspect_input_shape(orig_size: tuple[int, int], input_size: int, divisor: int
                       ) -> tuple[int, int]:
    """(H_in, W_in) of ``keep_aspect``: the short side to ``input_size``, the long side scaled
    alike and rounded up to a multiple of ``divisor`` (HigherHRNet's test resize)."""
    h, w = orig_size
    s = input_size / min(h, w)
    return (max(divisor, math.ceil(h * s / divisor) * divisor),
            max(divisor, math.ceil(w * s / divisor) * divisor))


def preprocess(image: np.ndarray, input_size: int, output_size: int, *,
               center: tuple[float, float] | np.ndarray | None = None,
               scale: float | None = None, keep_aspect: bool = False, divisor: int = 1,
               boxes: np.ndarray | None = None, labels: np.ndarray | None = None,
               num_classes: int = 0, box_sigma: float = 1.0
               ) -> tuple[torch.Tensor, dict[str, np.ndarray | tuple[int, int]]]:
    """The validation transform: long side to ``input_size``, centred, padded, normalised.

    With ``center`` and ``scale`` (a person's, as in MPII) the input is instead the crop of the
    ``200 · scale`` px square around ``center`` (:func:`aehg.data.transforms.crop_matrix`, as
    the hourglass code crops); the default is the same as the crop of the whole picture.

    Args:
        image: BGR uint8 picture (as read by OpenCV).
        input_size: square network input side.
        output_size: output-map side (input_size / stride).
        center: person centre (x, y) in picture pixels, or None.
        scale: person scale (height / 200 px), or None; given together with ``center``.
        keep_aspect: keep the picture's aspect ratio instead of padding it to a square: the
            short side becomes ``input_size`` and the input is :func:`aspect_input_shape`
            (people keep their scale on wide pictures); not with a person crop.
        divisor: the network's size divisor (with ``keep_aspect``).
        boxes: known objects (sgcls / predcls, docs/design.md §2 "Tasks"), x1, y1, x2, y2 in
            picture pixels: their box channels
            (:func:`aehg.data.box_channels.render_box_channels`, drawn through the input
            transform) follow the RGB channels, and the meta gets ``known_boxes`` and
            ``known_labels``. None: the RGB input only.
        labels: the boxes' classes, rendered as class masks when ``num_classes`` > 0.
        num_classes: C for predcls's class masks; 0 for sgcls.
        box_sigma: σ of the centre heatmap in input pixels.

    Returns:
        The normalised RGB input (with the box channels when ``boxes`` are given) and a meta
        dict with ``orig_size`` (h, w), ``input_transform`` (original → input pixels) and
        ``transform`` (original → output pixels), both 2×3 float64.

    Shapes:
        image: (H, W, 3) -> (3 [+ 2 + num_classes], input_size, input_size)
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected a uint8 BGR array (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    h, w = image.shape[:2]
    if (center is None) != (scale is None):
        raise ValueError(f"center and scale: expected both (a person crop) or neither, got "
                         f"center={center!r}, scale={scale!r}")
    shape: int | tuple[int, int] = input_size
    if keep_aspect:
        if center is not None:
            raise ValueError("keep_aspect: a person crop is square; use one or the other")
        shape = aspect_input_shape((h, w), input_size, divisor)
        s = input_size / min(h, w)
        # The picture scaled by s, centred in the (H_in, W_in) input (pixel centres, §7).
        m_in = np.array([[s, 0.0, (shape[1] - 1) / 2.0 - s * (w - 1) / 2.0],
                         [0.0, s, (shape[0] - 1) / 2.0 - s * (h - 1) / 2.0]])
    else:
        m_in = affine_matrix((h, w), input_size) if center is None else \
            crop_matrix(center, float(scale), input_size)
    m_out = compose(input_to_output(input_size, output_size), m_in)
    warped = warp_image(image, m_in, shape)
    rgb = warped[..., ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
    meta = {"orig_size": (h, w), "input_transform": m_in, "transform": m_out}
    x = torch.from_numpy(normalize_image(rgb))
    if boxes is None:
        return x, meta
    channels = render_box_channels(transform_boxes(boxes, m_in), tuple(x.shape[-2:]),
                                   sigma=box_sigma, labels=labels, num_classes=num_classes)
    meta["known_boxes"], meta["known_labels"] = np.asarray(boxes, np.float64), labels
    return torch.cat([x, torch.from_numpy(channels)]), meta
