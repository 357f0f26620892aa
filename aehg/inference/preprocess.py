"""The validation transform for inference: picture → normalised network input and the affine
transforms back to the picture (docs/design.md §7, §8)."""

from __future__ import annotations

import numpy as np
import torch

from aehg.data.transforms import (
    affine_matrix,
    compose,
    crop_matrix,
    input_to_output,
    normalize_image,
    warp_image,
)

__all__ = ["input_size_for_scale", "preprocess"]


def input_size_for_scale(input_size: int, scale: float, divisor: int) -> int:
    """Square input side at ``scale``: ``input_size · scale`` rounded to a multiple of ``divisor``
    (at least one ``divisor``)."""
    return max(divisor, int(round(input_size * scale / divisor)) * divisor)


def preprocess(image: np.ndarray, input_size: int, output_size: int, *,
               center: tuple[float, float] | np.ndarray | None = None,
               scale: float | None = None
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

    Returns:
        The normalised RGB input and a meta dict with ``orig_size`` (h, w),
        ``input_transform`` (original → input pixels) and ``transform`` (original → output
        pixels), both 2×3 float64.

    Shapes:
        image: (H, W, 3) -> (3, input_size, input_size)
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected a uint8 BGR array (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    h, w = image.shape[:2]
    if (center is None) != (scale is None):
        raise ValueError(f"center and scale: expected both (a person crop) or neither, got "
                         f"center={center!r}, scale={scale!r}")
    m_in = affine_matrix((h, w), input_size) if center is None else \
        crop_matrix(center, float(scale), input_size)
    m_out = compose(input_to_output(input_size, output_size), m_in)
    warped = warp_image(image, m_in, input_size)
    rgb = warped[..., ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
    meta = {"orig_size": (h, w), "input_transform": m_in, "transform": m_out}
    return torch.from_numpy(normalize_image(rgb)), meta
