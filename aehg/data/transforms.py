"""Affine helpers: one 2×3 warp per sample, from original image pixels to network input pixels.

Convention (docs/design.md §7): integer coordinates are pixel centres, in every frame. OpenCV's
``warpAffine`` samples with the same convention, so the matrix that maps point coordinates is the
one passed to it. Going from input to output resolution with stride ``s`` is
``(p + 0.5) / s - 0.5``.

Example:
    >>> params = AffineParams(rotation=10.0, scale=1.1, flip=True)
    >>> m_in = affine_matrix((480, 640), 512, params)            # original -> input pixels
    >>> m_out = compose(input_to_output(512, 128), m_in)         # original -> output pixels
    >>> back = apply_affine(apply_affine(points, m_out), invert_affine(m_out))  # == points
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from aehg.config import AugmentConfig

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AffineParams",
    "affine_matrix",
    "apply_affine",
    "color_jitter",
    "compose",
    "crop_matrix",
    "flip_permutation",
    "input_to_output",
    "invert_affine",
    "normalize_image",
    "random_affine_params",
    "to_network_input",
    "transform_boxes",
    "warp_image",
    "warp_mask",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class AffineParams:
    """One sample's augmentation.

    Attributes:
        rotation: degrees, counter-clockwise on screen (y points down).
        scale: zoom relative to fitting the long side into the input.
        shift: translation of the image centre, as a fraction of the input size (x, y).
        flip: horizontal flip applied last (in input pixels).
    """

    rotation: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    flip: bool = False


def random_affine_params(rng: np.random.Generator, cfg: AugmentConfig) -> AffineParams:
    """Draw rotation, scale, shift and flip uniformly within the ranges of ``cfg``."""
    rotation = float(rng.uniform(-cfg.rotation, cfg.rotation)) if cfg.rotation > 0 else 0.0
    scale = float(rng.uniform(cfg.scale_min, cfg.scale_max))
    shift = tuple(float(v) for v in rng.uniform(-cfg.translate, cfg.translate, size=2)) \
        if cfg.translate > 0 else (0.0, 0.0)
    flip = bool(rng.random() < cfg.flip_prob)
    return AffineParams(rotation=rotation, scale=scale, shift=shift, flip=flip)  # type: ignore[arg-type]


def _as3(m: np.ndarray) -> np.ndarray:
    out = np.eye(3, dtype=np.float64)
    out[:2] = m
    return out


def compose(*matrices: np.ndarray) -> np.ndarray:
    """The 2×3 affine applying the last matrix first: ``compose(A, B)(p) == A(B(p))``."""
    out = np.eye(3, dtype=np.float64)
    for m in matrices:
        m = np.asarray(m, dtype=np.float64)
        if m.shape != (2, 3):
            raise ValueError(f"compose: expected 2x3 affine matrices, got shape {m.shape}")
        out = out @ _as3(m)
    return out[:2].copy()


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2×3 affine (float64)."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"invert_affine: expected a 2x3 matrix, got shape {m.shape}")
    return np.linalg.inv(_as3(m))[:2].copy()


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Map points through a 2×3 affine.

    Shapes:
        points: (..., 2) x, y (extra trailing columns are not allowed; slice them off first)
        returns: (..., 2) float64
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1] != 2:
        raise ValueError(f"apply_affine: expected points of shape (..., 2), got {points.shape}")
    m = np.asarray(m, dtype=np.float64)
    return points @ m[:, :2].T + m[:, 2]


def input_to_output(input_size: int, output_size: int) -> np.ndarray:
    """The 2×3 affine from input pixels to output-map pixels: ``(p + 0.5) / stride - 0.5``."""
    if input_size % output_size:
        raise ValueError(f"input_size {input_size} is not a multiple of output_size {output_size}")
    s = output_size / input_size
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])


def affine_matrix(orig_size: tuple[int, int], input_size: int,
                  params: AffineParams | None = None) -> np.ndarray:
    """The 2×3 affine from original image pixels to (square) network input pixels.

    With default ``params`` this is the validation transform: the long side scaled to
    ``input_size``, the image centred and the rest padded. Augmentation then rotates and zooms
    about the image centre, shifts by ``shift * input_size`` and finally flips horizontally.

    Args:
        orig_size: (h, w) of the original image.
        input_size: side of the square network input.
        params: augmentation; None is the identity augmentation.
    """
    h, w = orig_size
    if h <= 0 or w <= 0:
        raise ValueError(f"affine_matrix: expected a positive image size, got {orig_size}")
    p = params or AffineParams()
    return _about_centre(((w - 1) / 2.0, (h - 1) / 2.0), p.scale * input_size / max(h, w),
                         input_size, p)


def _about_centre(centre: tuple[float, float] | np.ndarray, zoom: float, input_size: int,
                  p: AffineParams) -> np.ndarray:
    """Scale by ``zoom`` and rotate about ``centre``, put it on the input centre plus the
    shift, flip last: the one affine behind :func:`affine_matrix` and :func:`crop_matrix`."""
    a = math.radians(p.rotation)
    cos, sin = math.cos(a) * zoom, math.sin(a) * zoom
    # y points down, so a counter-clockwise rotation on screen has +sin in the x row.
    rot = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    centre_in = (input_size - 1) / 2.0
    to_origin = np.array([[1.0, 0.0, -centre[0]], [0.0, 1.0, -centre[1]]])
    to_input = np.array([[1.0, 0.0, centre_in + p.shift[0] * input_size],
                         [0.0, 1.0, centre_in + p.shift[1] * input_size]])
    m = compose(to_input, rot, to_origin)
    if p.flip:
        m = compose(np.array([[-1.0, 0.0, input_size - 1.0], [0.0, 1.0, 0.0]]), m)
    return m


def crop_matrix(center: tuple[float, float] | np.ndarray, scale: float, input_size: int,
                params: AffineParams | None = None) -> np.ndarray:
    """The 2×3 affine from original pixels to network input pixels of a person crop.

    The square of side ``200 · scale`` px centred on ``center`` (MPII's person centre and
    scale, scale = person height / 200 px, as the hourglass code crops) fills the
    ``input_size`` input, its centre on the input centre ``(S - 1) / 2`` (docs/design.md §7).
    Augmentation zooms by ``params.scale`` and rotates about that centre, shifts by
    ``params.shift · input_size`` and flips last, as in :func:`affine_matrix`. The validation
    transform of a whole h × w picture is the crop with centre ``((w - 1) / 2, (h - 1) / 2)``
    and scale ``max(h, w) / 200``.

    Raises:
        ValueError: a centre or scale that is not finite, or a scale <= 0.
    """
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (2,) or not np.isfinite(c).all():
        raise ValueError(f"center: expected a finite (x, y), got {center!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected a finite positive person scale (height / 200 px), "
                         f"got {scale!r}")
    p = params or AffineParams()
    return _about_centre(c, p.scale * input_size / (200.0 * scale), input_size, p)


def flip_permutation(flip_map: np.ndarray | list[int], flip: bool) -> np.ndarray:
    """The channel order after a flip: part ``c`` of the flipped image is part ``flip_map[c]``."""
    fm = np.asarray(flip_map, dtype=np.int64)
    return fm if flip else np.arange(len(fm))


def transform_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Map axis-aligned boxes through an affine and take the bounding box of the four corners.

    Shapes:
        boxes: (N, 4) x1, y1, x2, y2
        returns: (N, 4) float64
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]],
                       axis=1)
    pts = apply_affine(corners, m)
    return np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1)


def warp_image(image: np.ndarray, m: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Warp an (H, W, 3) uint8 image with ``m`` into a ``size``×``size`` (or ``(h, w)``) image
    (black padding)."""
    h, w = (size, size) if isinstance(size, int) else size
    return cv2.warpAffine(image, np.asarray(m, dtype=np.float64), (int(w), int(h)),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_mask(mask: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Warp a float (H, W) loss mask (1 = counted) with ``m``; padding counts (value 1).

    The padded border is counted so that the network learns to output nothing there, which is
    what it sees at validation time. The result is binarised at 0.5.
    """
    out = cv2.warpAffine(mask.astype(np.float32), np.asarray(m, dtype=np.float64), (size, size),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
    return (out > 0.5).astype(np.float32)


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast and saturation, each a factor in [1 - s, 1 + s].

    Shapes:
        image: (H, W, 3) float32 RGB in [0, 1]
        returns: (H, W, 3) float32 in [0, 1]
    """
    if strength <= 0:
        return image
    b, c, s = rng.uniform(max(0.0, 1 - strength), 1 + strength, size=3)
    gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = gray[..., None] + np.float32(s) * (image - gray[..., None])
    mean = np.float32(gray.mean())
    out = (out - mean) * np.float32(c) + mean
    out *= np.float32(b)
    return np.clip(out, 0.0, 1.0, out=out)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] → (3, H, W) float32 normalised with ImageNet mean/std."""
    out = (image - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


_GRAY = np.array([0.299, 0.587, 0.114])
_BGR_TO_RGB = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def to_network_input(bgr: np.ndarray, rng: np.random.Generator | None = None,
                     jitter: float = 0.0) -> np.ndarray:
    """BGR uint8 image → normalised RGB (3, H, W) float32, with optional colour jitter.

    The same result as ``normalize_image(color_jitter(rgb / 255, rng, jitter))`` (same random
    draws), but folded into one colour matrix applied by ``cv2.transform``: saturation, contrast
    and brightness are all affine in the colour, so only the clip to [0, 1] sits between them and
    the normalisation.

    Shapes:
        bgr: (H, W, 3) uint8
        returns: (3, H, W) float32
    """
    lin = _BGR_TO_RGB / 255.0
    off = np.zeros(3)
    clip = False
    if jitter > 0 and rng is not None:
        b, c, s = rng.uniform(max(0.0, 1 - jitter), 1 + jitter, size=3)
        sat = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _GRAY)
        channel_means = np.array(cv2.mean(bgr)[:3])[::-1] / 255.0          # RGB
        gray_mean = float(_GRAY @ channel_means)
        lin = b * c * sat @ lin
        off = np.full(3, b * (1 - c) * gray_mean)
        clip = True
    std = IMAGENET_STD.astype(np.float64)
    mean = IMAGENET_MEAN.astype(np.float64)
    x = bgr.astype(np.float32)
    if clip:
        x = cv2.transform(x, np.concatenate([lin, off[:, None]], axis=1))
        np.clip(x, 0.0, 1.0, out=x)
        x = cv2.transform(x, np.concatenate([np.diag(1 / std), (-mean / std)[:, None]], axis=1))
    else:
        x = cv2.transform(x, np.concatenate([lin / std[:, None], (-mean / std)[:, None]],
                                            axis=1))
    return np.ascontiguousarray(x.transpose(2, 0, 1))
