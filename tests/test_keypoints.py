"""Left/right swaps from part names: every common convention, and an error rather than a
guess when the names do not give one."""

from __future__ import annotations

import pytest

from aehg.keypoints import (
    COCO_FLIP_MAP,
    COCO_KEYPOINT_NAMES,
    FlipMapError,
    derive_flip_map,
    missing_flip_map_error,
)


def test_coco_names_give_the_coco_flip_map():
    assert derive_flip_map(COCO_KEYPOINT_NAMES) == list(COCO_FLIP_MAP)


@pytest.mark.parametrize("left,right", [
    ("left_eye", "right_eye"), ("LEFT_EYE", "RIGHT_EYE"), ("l_eye", "r_eye"),
    ("L-eye", "R-eye"), ("LeftWrist", "RightWrist"), ("LShoulder", "RShoulder"),
    ("wrist_l", "wrist_r"), ("Wrist_L", "Wrist_R"), ("WristL", "WristR"),
    ("knee left", "knee right"), ("Left.Hip", "Right.Hip"),
])
def test_each_naming_convention(left, right):
    names = ["head", right, "neck", left]
    assert derive_flip_map(names) == [0, 3, 2, 1]


def test_names_without_sides_give_none_and_unpaired_sides_are_errors():
    assert derive_flip_map(["p0", "p1", "p2"]) is None
    assert derive_flip_map(["reye", "leye"]) is None  # no separator or case boundary: no side
    with pytest.raises(FlipMapError, match=r"^part 'left_eye' has no 'right' partner among the "
                       r"part names \['left_eye', 'nose'\]; set data.flip_map"):
        derive_flip_map(["left_eye", "nose"])
    with pytest.raises(FlipMapError, match=r"^part names 'left_eye' and 'l_eye' are the same "
                       r"side of the same part; set data.flip_map"):
        derive_flip_map(["left_eye", "l_eye", "r_eye"])


def test_missing_flip_map_message_names_the_parts_and_the_key():
    msg = str(missing_flip_map_error(["a", "b"], "x.json: category id 1"))
    assert msg.startswith("x.json: category id 1: horizontal flips need the left/right swap "
                          "of the parts, and the part names ['a', 'b'] do not give one")
    assert "set data.flip_map" in msg and "data.augment.flip_prob=0" in msg
