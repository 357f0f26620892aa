"""Annotation files are checked when they are opened: every broken annotation is a
DataFormatError naming the file, the id and the field (never a raw numpy / pycocotools / Python
error later, when its sample is drawn); truncated images and data without a usable image are
errors that name the file."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from aehg.config import SyntheticConfig
from aehg.data.coco import (
    CocoKeypointDataset,
    DataFormatError,
    UnreadableImageError,
    rle_counts_total,
    truncated_image,
)
from aehg.data.relations import RelationDataset
from aehg.data.synthetic import ensure_synthetic

SAMPLE = Path(__file__).parent / "coco_kp_ccby"
JSON = SAMPLE / "person_keypoints_ccby.json"
IMAGES = SAMPLE / "images"
CROWD = 900100129648   # the crowd RLE of image 129648 (427 x 640)


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(JSON.read_text())


def _ann(data: dict, ann_id: int | None = None) -> dict:
    if ann_id is None:
        return next(a for a in data["annotations"] if not a["iscrowd"])
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _open(tmp_path: Path, data: dict, **kw) -> CocoKeypointDataset:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return CocoKeypointDataset(path, IMAGES, **kw)


def _error(tmp_path: Path, data: dict, **kw) -> str:
    """The message of the DataFormatError raised when the file is opened, minus the path."""
    with pytest.raises(DataFormatError) as info:
        _open(tmp_path, data, **kw)
    assert type(info.value) is DataFormatError
    message = str(info.value)
    prefix = f"{tmp_path / 'bad.json'}: "
    assert message.startswith(prefix)
    return message[len(prefix):]


# --------------------------------------------------------------------------- annotations


def _set_keypoint(data, index, value):
    ann = _ann(data)
    ann["keypoints"][index] = value
    return ann["id"]


@pytest.mark.parametrize("index, value, expected", [
    (0, float("nan"), "x of part 0 must be a finite number, got a number NaN"),
    (4, float("inf"), "y of part 1 must be a finite number, got a number Infinity"),
    (3, "12", 'x of part 1 must be a finite number, got a string "12"'),
    (6, True, "x of part 2 must be a finite number, got a boolean true"),
    (7, None, "y of part 2 must be a finite number, got null"),
    (2, "2", 'v of part 0 must be a finite number, got a string "2"'),
    (14, 3, "visibility v of part 4 is 3, expected 0, 1 or 2"),
    (14, -1, "visibility v of part 4 is -1, expected 0, 1 or 2"),
    (14, 1.5, "visibility v of part 4 is 1.5, expected 0, 1 or 2"),
])
def test_bad_keypoint_values(tmp_path, raw, index, value, expected):
    data = copy.deepcopy(raw)
    ann_id = _set_keypoint(data, index, value)
    assert _error(tmp_path, data) == f"annotation id {ann_id}: field 'keypoints': {expected}"


def test_keypoints_of_the_wrong_shape(tmp_path, raw):
    data = copy.deepcopy(raw)
    ann = _ann(data)
    ann["keypoints"] = "0 0 0"
    assert _error(tmp_path, data) == (f"annotation id {ann['id']}: field 'keypoints' must be a "
                                      f'list [x, y, v, …], got a string "0 0 0"')
    ann["keypoints"] = [0] * 50
    assert _error(tmp_path, data) == (f"annotation id {ann['id']}: field 'keypoints' has 50 "
                                      f"values, expected 51 (3 x 17 parts of category id 1 "
                                      f"'person')")
    del ann["keypoints"]
    assert _error(tmp_path, data) == (f"annotation id {ann['id']}: missing field 'keypoints' "
                                      f"(51 values for the 17 parts of category 'person')")


@pytest.mark.parametrize("field, value, expected", [
    ("bbox", [1, 2, 3], "field 'bbox' must be [x, y, w, h] (4 numbers), got [1, 2, 3]"),
    ("bbox", [1, 2, -3, 4], "field 'bbox' must be [x, y, w, h] with w, h >= 0, got "
                            "[1, 2, -3, 4]"),
    ("bbox", [1, float("nan"), 3, 4], "field 'bbox' must be [x, y, w, h] of finite numbers, "
                                      "got [1, NaN, 3, 4]"),
    ("bbox", [1, "2", 3, 4], 'field \'bbox\' must be [x, y, w, h] of finite numbers, got '
                             '[1, "2", 3, 4]'),
    ("area", -1.0, "field 'area' must be a number >= 0, got a number -1.0"),
    ("area", "big", 'field \'area\' must be a number >= 0, got a string "big"'),
    ("num_keypoints", 2.0, "field 'num_keypoints' must be an integer >= 0, got a number 2.0"),
    ("iscrowd", "0", 'field \'iscrowd\' must be 0 or 1, got a string "0"'),
    ("iscrowd", 2, "field 'iscrowd' must be 0 or 1, got an integer 2"),
    ("segmentation", [[1, 2, 3, 4, 5]], "field 'segmentation' has a polygon of 5 values, "
                                        "expected an even number (x, y pairs)"),
    ("segmentation", [[1, 2, 3, "4", 5, 6]], "field 'segmentation': polygon coordinates must "
                                             'be finite numbers, got a string "4"'),
    ("segmentation", [[10, 10, 20, 10, 1e9, 30]],
     "field 'segmentation': polygon point (1e+09, 30) lies far outside its image 234748 "
     "(640 x 425); points must be within one image size of the image"),
    ("segmentation", [1, 2, 3, 4, 5, 6], "field 'segmentation' must be a list of polygons "
                                         "([x1, y1, x2, y2, …] each) or an RLE object, got "
                                         "[1, 2, 3, 4, 5, 6]"),
    ("segmentation", "polygon", "field 'segmentation' must be a list of polygons or an RLE "
                                'object, got a string "polygon"'),
])
def test_bad_annotation_fields(tmp_path, raw, field, value, expected):
    data = copy.deepcopy(raw)
    ann = _ann(data)
    ann[field] = value
    assert _error(tmp_path, data) == f"annotation id {ann['id']}: {expected}"


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.update(size=[427, 641]),
     "field 'segmentation' is an RLE of size [427, 641] but its image 129648 is "
     "[height, width] = [427, 640]"),
    (lambda s: s.update(size="427x640"),
     "field 'segmentation' is an RLE object whose 'size' must be [height, width] (integers), "
     'got "427x640"'),
    (lambda s: s["counts"].append(5),
     "field 'segmentation': RLE runs cover 273285 pixels, expected height x width = 273280"),
    (lambda s: s["counts"].__setitem__(3, -2),
     "field 'segmentation': RLE 'counts' must be run lengths (integers >= 0), got"),
    (lambda s: s.update(counts="0a~"),
     "field 'segmentation': RLE 'counts' is not a valid compressed RLE string: \"0a~\""),
    (lambda s: s.update(counts=None),
     "field 'segmentation': RLE 'counts' must be a list of run lengths or a compressed "
     "string, got null"),
    (lambda s: s.pop("counts"),
     "field 'segmentation': RLE 'counts' must be a list of run lengths or a compressed "
     "string, got null"),
])
def test_bad_crowd_rle(tmp_path, raw, change, expected):
    data = copy.deepcopy(raw)
    change(_ann(data, CROWD)["segmentation"])
    assert _error(tmp_path, data).startswith(f"annotation id {CROWD}: {expected}")


def test_compressed_rle_is_accepted_and_decoded_sizes_checked(tmp_path, raw):
    data = copy.deepcopy(raw)
    seg = _ann(data, CROWD)["segmentation"]
    rle = mask_utils.frPyObjects(seg, 427, 640)
    seg["counts"] = rle["counts"].decode("ascii")
    ds = _open(tmp_path, data, input_size=128, output_size=32)
    assert ds.get(ds.ids.index(129648))["mask"].min() == 0       # the crowd is masked
    seg["counts"] = seg["counts"][:-3]
    message = _error(tmp_path, data)
    assert re.fullmatch(rf"annotation id {CROWD}: field 'segmentation': RLE runs cover \d+ "
                        r"pixels, expected height x width = 273280", message)


@pytest.mark.parametrize("seed", range(5))
def test_rle_counts_total_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, size=2)
    mask = np.asfortranarray(rng.random((h, w)) < rng.random())
    counts = mask_utils.encode(mask.astype(np.uint8))["counts"].decode("ascii")
    assert rle_counts_total(counts) == h * w
    assert rle_counts_total(counts + "1") != h * w


# --------------------------------------------------------------------------- ids, images


def test_image_id_of_another_type_is_named_as_such(tmp_path, raw):
    data = copy.deepcopy(raw)
    ann = next(a for a in data["annotations"] if a["image_id"] == 234748)
    ann["image_id"] = "234748"
    assert _error(tmp_path, data) == (f"annotation id {ann['id']}: field 'image_id' is a string "
                                      f"\"234748\" but the image ids of this file are integers "
                                      f"(e.g. image id 785)")


def test_ids_of_one_kind_share_a_type_and_are_hashable(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["images"][3]["id"] = str(data["images"][3]["id"])
    assert _error(tmp_path, data) == (
        "image id '160012': field 'id' is a string but 16 of the 17 image ids are integers; the "
        "image ids of one file must all be integers or all strings")
    data = copy.deepcopy(raw)
    data["annotations"][5]["id"] = [1]
    assert _error(tmp_path, data) == ("annotations[5]: field 'id' must be an integer or a "
                                      "string, got a list [1]")
    data = copy.deepcopy(raw)
    data["annotations"][5]["category_id"] = 1.0
    assert _error(tmp_path, data) == (f"annotation id {data['annotations'][5]['id']}: field "
                                      f"'category_id' must be a category id (an integer), got "
                                      f"a number 1.0")


def test_string_ids_throughout_are_fine(tmp_path, raw):
    data = copy.deepcopy(raw)
    for im in data["images"]:
        im["id"] = f"img{im['id']}"
    for a in data["annotations"]:
        a["image_id"] = f"img{a['image_id']}"
        a["id"] = str(a["id"])
    ds = _open(tmp_path, data, input_size=128, output_size=32)
    assert ds.ids[0] == "img129648" and len(ds) == 17
    assert ds.get(0)["meta"]["image_id"] == "img129648"


@pytest.mark.parametrize("field, value, expected", [
    ("width", "640", 'field \'width\' must be a positive integer, got a string "640"'),
    ("height", 0, "field 'height' must be a positive integer, got an integer 0"),
    ("width", 640.0, "field 'width' must be a positive integer, got a number 640.0"),
    ("file_name", 785, "field 'file_name' must be a non-empty string, got an integer 785"),
])
def test_bad_image_fields(tmp_path, raw, field, value, expected):
    data = copy.deepcopy(raw)
    data["images"][0][field] = value
    assert _error(tmp_path, data) == f"image id 785: {expected}"


@pytest.mark.parametrize("field, value, expected", [
    ("skeleton", [[16, 14], [3]], "field 'skeleton': [3] is not a pair of two 1-based part "
                                  "indices in 1..17"),
    ("skeleton", [[0, 1]], "field 'skeleton': [0, 1] is not a pair of two 1-based part "
                           "indices in 1..17"),
    ("skeleton", [[17, 18]], "field 'skeleton': [17, 18] is not a pair of two 1-based part "
                             "indices in 1..17"),
    ("skeleton", [["1", 2]], "field 'skeleton': [\"1\", 2] is not a pair of two 1-based part "
                             "indices in 1..17"),
    ("flip_map", ["0"] * 17, "field 'flip_map' must be a list of integers (0-based part "
                             "indices), got [\"0\", \"0\""),
    ("flip_map", [0] * 17, "field 'flip_map': expected a permutation of 0..16, got [0, 0"),
    ("oks_sigmas", [0.1] * 16, "field 'oks_sigmas': expected 17 positive values, got [0.1"),
    ("oks_sigmas", ["0.1"] * 17, "field 'oks_sigmas' must be a list of numbers, got "
                                 "[\"0.1\", \"0.1\""),
    ("keypoints", ["nose", 2], "field 'keypoints' must be a non-empty list of part names "
                               "(strings), got [\"nose\", 2]"),
    ("name", None, "field 'name' must be a string, got null"),
])
def test_bad_category_fields(tmp_path, raw, field, value, expected):
    data = copy.deepcopy(raw)
    data["categories"][0][field] = value
    assert _error(tmp_path, data).startswith(f"category id 1: {expected}")


def test_category_without_keypoints(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["categories"][0]["keypoints"] = []
    assert _error(tmp_path, data) == ("category id 1: field 'keypoints' must be a non-empty list "
                                      "of part names (strings), got []")
    del data["categories"][0]["keypoints"]
    assert _error(tmp_path, data) == ("no category has a 'keypoints' field (not a keypoints "
                                      "file; category ids: 1)")


# --------------------------------------------------------------------------- relations


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    cfg = SyntheticConfig(kind="graph", num_train=3, num_val=1, image_size=64,
                          num_object_classes=3, num_link_classes=2, seed=2)
    paths = ensure_synthetic(cfg, tmp_path_factory.mktemp("graph"))
    return paths, json.loads(paths.train_json.read_text())


def _relation_error(tmp_path, graph, change) -> str:
    paths, raw = graph
    data = copy.deepcopy(raw)
    change(data)
    path = tmp_path / "rel.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError) as info:
        RelationDataset(path, paths.train_images)
    assert type(info.value) is DataFormatError
    assert str(info.value).startswith(f"{path}: ")
    return str(info.value)[len(f"{path}: "):]


def test_relation_fields(tmp_path, graph):
    def rel(data):
        return data["relationships"][0]

    assert _relation_error(tmp_path, graph, lambda d: rel(d).update(predicate_id="1")) == (
        "relationship id 1: field 'predicate_id' is a string \"1\" but the predicate ids of "
        "this file are integers (e.g. predicate id 1)")
    assert _relation_error(tmp_path, graph, lambda d: rel(d).pop("subject_id")) == (
        "relationship id 1: missing field 'subject_id'")
    assert _relation_error(tmp_path, graph, lambda d: rel(d).update(object_id=None)) == (
        "relationship id 1: field 'object_id' must be an annotation id (an integer), got null")
    assert _relation_error(tmp_path, graph, lambda d: rel(d).update(image_id=99)) == (
        "relationship id 1: field 'image_id' names missing image 99")
    assert _relation_error(
        tmp_path, graph, lambda d: d["predicate_categories"][1].update(name=5)) == (
        "predicate id 2: field 'name' must be a string, got an integer 5")
    assert _relation_error(tmp_path, graph, lambda d: d["annotations"][2].pop("bbox")) == (
        "annotation id 3: missing field 'bbox' ([x, y, w, h] with w, h >= 0)")


# --------------------------------------------------------------------------- no usable data


def test_no_image_with_a_visible_keypoint_is_an_error_about_the_data(tmp_path, raw):
    data = copy.deepcopy(raw)
    for a in data["annotations"]:
        a["keypoints"][2::3] = [0] * 17
    assert _error(tmp_path, data, train=True) == (
        "no image with a person that has an annotated keypoint (visibility > 0) of category "
        "'person' among its 17 images and 89 annotations: nothing to train on")
    # Validation keeps every image (people without keypoints are masked).
    assert len(_open(tmp_path, data)) == 17


def test_no_image_is_an_error(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["images"], data["annotations"] = [], []
    assert _error(tmp_path, data, train=True) == ("no image (field 'images' is empty): nothing "
                                                  "to train on")
    assert _error(tmp_path, data) == "no image (field 'images' is empty): nothing to evaluate"


def test_no_object_is_an_error_about_the_relation_data(tmp_path, graph):
    paths, raw = graph
    data = copy.deepcopy(raw)
    for a in data["annotations"]:
        a["iscrowd"] = 1
    path = tmp_path / "rel.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=rf"^{path}: no image with an object \(a non-crowd "
                                              r"annotation\) among its 3 images and \d+ "
                                              r"annotations: nothing to train on$"):
        RelationDataset(path, paths.train_images, train=True)


# --------------------------------------------------------------------------- truncated images


def _one_image(raw: dict, file_name: str) -> dict:
    data = copy.deepcopy(raw)
    data["images"] = [im for im in data["images"] if im["id"] == 785]
    data["images"][0]["file_name"] = file_name
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == 785]
    return data


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path, raw):
    full = (IMAGES / "000000000785.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(full[:len(full) // 2])
    # OpenCV alone decodes it: a picture of the right size, grey where the data is missing.
    assert cv2.imread(str(tmp_path / "cut.jpg")).shape == (425, 640, 3)
    path = tmp_path / "one.json"
    path.write_text(json.dumps(_one_image(raw, "cut.jpg")))
    ds = CocoKeypointDataset(path, tmp_path, input_size=128, output_size=32)
    with pytest.raises(UnreadableImageError) as info:
        ds[0]
    assert str(info.value) == (f"image file {tmp_path / 'cut.jpg'} is truncated (JPEG without its "
                               f"end-of-image marker; image id 785 in {path})")


def test_whole_images_pass_the_truncation_check(tmp_path):
    for jpg in sorted(IMAGES.glob("*.jpg")):
        assert truncated_image(jpg) is None, jpg
    # Data after the end marker (some cameras append some) is not truncation.
    extra = tmp_path / "extra.jpg"
    extra.write_bytes((IMAGES / "000000000785.jpg").read_bytes() + b"\x00trailer")
    assert truncated_image(extra) is None
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    assert truncated_image(png) is None
    png.write_bytes(png.read_bytes()[:-12])
    assert truncated_image(png) == "PNG without its IEND chunk"


# --------------------------------------------------------------------------- corrupted files


TABLES = ("images", "annotations", "categories", "predicate_categories", "relationships")
LABEL = {"images": "image", "annotations": "annotation", "categories": "category",
         "predicate_categories": "predicate", "relationships": "relationship"}
BAD = st.one_of(
    st.none(), st.booleans(), st.text(max_size=3),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), "1", "", [], {}, 1e9, -1e12,
                     1e300]),
    st.integers(-3, 20), st.floats(-1e4, 1e4), st.integers(2**31, 2**64),
    st.lists(st.integers(-2, 20), max_size=4),
    st.dictionaries(st.sampled_from(["size", "counts", "id"]), st.integers(-1, 3), max_size=2))


def _small_keypoint_data(raw: dict) -> dict:
    keep = {785, 129648, 183709}      # one person; 9 people and a crowd RLE; 4 people
    data = copy.deepcopy(raw)
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return data


@st.composite
def corruption(draw, data: dict) -> tuple[dict, str, int, object]:
    """A copy of ``data`` with one field of one item deleted, replaced, shortened or with an
    element replaced; returns it with the table, the item's position and its id."""
    data = copy.deepcopy(data)
    table = draw(st.sampled_from([t for t in TABLES if data.get(t)]))
    index = draw(st.integers(0, len(data[table]) - 1))
    item = data[table][index]
    original_id = item["id"]
    key = draw(st.sampled_from(sorted(item)))
    value = item[key]
    how = draw(st.sampled_from(["delete", "replace", "inside", "inside", "shorten"]))
    if how == "delete":
        del item[key]
    elif how == "replace" or not isinstance(value, (list, dict)) or not value:
        item[key] = draw(BAD)
    elif how == "shorten":
        item[key] = value[:-1] if isinstance(value, list) else dict(list(value.items())[:-1])
    else:
        # One element inside (a keypoint value, a bbox number, a polygon, an RLE field …),
        # one level further down for nested lists (polygon coordinates, skeleton pairs).
        at = draw(st.sampled_from(list(value))) if isinstance(value, dict) else \
            draw(st.integers(0, len(value) - 1))
        inner = value[at]
        if isinstance(inner, list) and inner and draw(st.booleans()):
            inner[draw(st.integers(0, len(inner) - 1))] = draw(BAD)
        else:
            value[at] = draw(BAD)
    return data, table, index, original_id


def _names_the_item(message: str, table: str, index: int, original_id: object,
                    data: dict) -> bool:
    item = data[table][index]
    ids = [original_id, item.get("id") if isinstance(item, dict) else None]
    texts = {repr(i) if isinstance(i, str) else str(i) for i in ids
             if isinstance(i, (int, str)) and not isinstance(i, bool)}
    label = LABEL[table]
    named = (rf"\b{label} (?:id |ids: )?{re.escape(t)}(?![\w.'\"])" for t in texts)
    return f"{table}[{index}]" in message or any(re.search(r, message) for r in named)


def _check_corrupted(tmp_path, case, open_dataset) -> None:
    data, table, index, original_id = case
    path = tmp_path / "corrupt.json"
    path.write_text(json.dumps(data))
    try:
        ds = open_dataset(path)
    except DataFormatError as exc:
        assert type(exc) is DataFormatError
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        assert _names_the_item(message, table, index, original_id, data), (table, message)
        return
    # Accepted: then it must also work (or fail with the library's own error naming the
    # image) when its samples are drawn and its statistics computed.
    ds.stats  # noqa: B018
    for i in range(len(ds)):
        try:
            ds.get(i)
        except (FileNotFoundError, UnreadableImageError) as exc:
            assert f"image id {ds.ids[i]!r}" in str(exc) or f"image id {ds.ids[i]}" in str(exc)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_corrupted_keypoint_json_fails_with_a_named_data_format_error(tmp_path, raw, data):
    case = data.draw(corruption(_small_keypoint_data(raw)))
    _check_corrupted(tmp_path, case, lambda p: CocoKeypointDataset(
        p, IMAGES, input_size=64, output_size=16))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_corrupted_relation_json_fails_with_a_named_data_format_error(tmp_path, graph, data):
    paths, raw = graph
    case = data.draw(corruption(raw))
    _check_corrupted(tmp_path, case, lambda p: RelationDataset(
        p, paths.train_images, input_size=64, output_size=16))
