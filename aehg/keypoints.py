"""The COCO person keypoint set in one place — names, skeleton, flip map, OKS sigmas and the
decoding part order — and the left/right swap of any keypoint set from its part names
(docs/design.md §5).

Data (flip augmentation, default sigmas), evaluation (COCOeval sigmas), inference (flip test)
and drawing read these constants; other keypoint sets describe themselves in their dataset's
``categories`` (``keypoints``, ``skeleton``, optional ``flip_map``) or in the config.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "COCO_FLIP_MAP",
    "FlipMapError",
    "COCO_KEYPOINT_NAMES",
    "COCO_OKS_SIGMAS",
    "COCO_PART_ORDER",
    "COCO_SKELETON",
    "derive_flip_map",
    "missing_flip_map_error",
]

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")

# 0-based part pairs: the 1-based ``skeleton`` of COCO's person category, minus 1.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))

# Left/right swap of a horizontal flip: part c of a flipped image is part COCO_FLIP_MAP[c].
COCO_FLIP_MAP: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

# COCOeval's per-keypoint OKS sigmas (pycocotools' defaults for the 17 parts).
COCO_OKS_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
    0.087, 0.087, 0.089, 0.089)

# Grouping order of the AE code: nose, eyes, ears, shoulders, hips, elbows, wrists, knees,
# ankles — well-localised parts first, so that they seed the instances.
COCO_PART_ORDER: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)


class FlipMapError(ValueError):
    """A horizontal flip needs a left/right swap of the parts that nothing provides."""


_SIDES = {"left": "right", "right": "left", "l": "r", "r": "l"}


def _tokens(name: str) -> list[str]:
    # "LeftWrist" / "RShoulder" / "wrist_L" / "l-eye" → lower-case words.
    s = re.sub(r"[\s_\-.]+", " ", name.strip())
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", s)
    s = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", " ", s)
    return s.lower().split()


def _side_key(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(side word, the name with that word replaced by a placeholder), or None."""
    words = _tokens(name)
    if len(words) < 2:
        return None
    for pos in (0, len(words) - 1):
        if words[pos] in _SIDES:
            rest = list(words)
            rest[pos] = "<left>" if words[pos] in ("left", "l") else "<right>"
            return words[pos], tuple(rest)
    return None


def derive_flip_map(names: Sequence[str]) -> list[int] | None:
    """The left/right swap of a keypoint set from its part names, or None without sided names.

    A sided name carries a side word at its start or end, in any case and with any separator:
    ``left_eye``/``right_eye``, ``l_eye``/``r_eye``, ``LeftWrist``/``RightWrist``,
    ``RShoulder``/``LShoulder``, ``wrist_l``/``wrist_r``, ``Wrist_L``/``Wrist_R``, ``WristL``.
    Its partner is the name with the other side word in the same place and form; names
    without a side word map to themselves. For COCO's 17 names this is ``COCO_FLIP_MAP``.

    Returns:
        ``flip_map`` (part ``c`` of a flipped image is part ``flip_map[c]``), or None when no
        name has a side word (nothing to derive: the caller must not guess).

    Raises:
        FlipMapError: a sided name has no partner, or two names claim the same partner.
    """
    keys = [_side_key(str(n)) for n in names]
    if not any(keys):
        return None
    index: dict[tuple[str, ...], int] = {}
    for i, key in enumerate(keys):
        if key is not None:
            if key[1] in index:
                raise FlipMapError(f"part names {names[index[key[1]]]!r} and {names[i]!r} are "
                                   f"the same side of the same part; set data.flip_map")
            index[key[1]] = i
    out = list(range(len(names)))
    swap = {"<left>": "<right>", "<right>": "<left>"}
    for i, key in enumerate(keys):
        if key is None:
            continue
        partner = tuple(swap.get(w, w) for w in key[1])
        if partner not in index:
            raise FlipMapError(f"part {names[i]!r} has no {_SIDES[key[0]]!r} partner among the "
                               f"part names {list(names)}; set data.flip_map (part c of a "
                               f"flipped image is part flip_map[c])")
        out[i] = index[partner]
    return out


def missing_flip_map_error(names: Sequence[str] | None, where: str) -> FlipMapError:
    """The error for a flip (augmentation or flip test) with no known left/right swap."""
    shown = f"the part names {list(names)}" if names else "no part names"
    return FlipMapError(f"{where}: horizontal flips need the left/right swap of the parts, and "
                        f"{shown} do not give one (no left/right side words); set "
                        f"data.flip_map (part c of a flipped image is part flip_map[c]; the "
                        f"identity [0, 1, …] if no part has a side), or turn the flips off "
                        f"(data.augment.flip_prob=0, eval.flip_test=false)")
