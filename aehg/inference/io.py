"""Reading the pictures a user points inference at (docs/design.md §8)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from aehg.data.coco import truncated_image

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "list_images", "read_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """An input picture is missing or cannot be decoded; the message names the file."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a picture as BGR uint8 ``(H, W, 3)``; raise :class:`ImageReadError` naming it.

    A file cut short (an interrupted copy or download) is refused too: OpenCV decodes a
    truncated JPEG as a partly grey picture with only a libjpeg warning
    (:func:`aehg.data.coco.truncated_image`).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    problem = truncated_image(path)
    if problem is not None:
        raise ImageReadError(f"image file {path} is truncated ({problem})")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"cannot decode image file {path} (not a picture OpenCV reads)")
    return image


def list_images(path: str | os.PathLike[str]) -> list[Path]:
    """The picture to process, or the pictures of a folder (sorted, by file suffix).

    Raises:
        FileNotFoundError: ``path`` does not exist, or the folder holds no picture.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"input not found: {path} (expected an image or a folder)")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in
                   IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no image in folder {path} (looked for "
                                f"{', '.join(IMAGE_SUFFIXES)})")
    return files
