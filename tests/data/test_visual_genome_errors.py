"""The Visual Genome converter on broken inputs: one DataFormatError naming the file, the record
and the field, never a raw KeyError / TypeError / JSONDecodeError."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aehg.data.coco import DataFormatError
from aehg.data.visual_genome import (
    convert_visual_genome,
    load_alias_dict,
    load_vg150_vocabulary,
)

SAMPLE = Path(__file__).parent / "visual_genome_sample"
VOCAB = SAMPLE / "VG-SGG-dicts-with-attri.json"
GRAPHS = json.loads((SAMPLE / "scene_graphs_first100.json").read_text())[:3]
INFOS = json.loads((SAMPLE / "image_data_first100.json").read_text())[:3]


def _files(tmp_path: Path, graphs=GRAPHS, infos=INFOS) -> tuple[Path, Path]:
    sg, img = tmp_path / "scene_graphs.json", tmp_path / "image_data.json"
    sg.write_text(graphs if isinstance(graphs, str) else json.dumps(graphs))
    img.write_text(infos if isinstance(infos, str) else json.dumps(infos))
    return sg, img


def _message(tmp_path: Path, graphs=GRAPHS, infos=INFOS, vocab=VOCAB) -> str:
    sg, img = _files(tmp_path, graphs, infos)
    with pytest.raises(DataFormatError) as info:
        convert_visual_genome(sg, img, vocab)
    return str(info.value)


def _graphs(edit) -> list:
    graphs = copy.deepcopy(GRAPHS)
    edit(graphs)
    return graphs


def test_sample_subset_converts(tmp_path):
    sg, img = _files(tmp_path)
    data, report = convert_visual_genome(sg, img, VOCAB)
    assert report["images"] == 3 and len(data["images"]) == 3


OBJ = GRAPHS[0]["objects"][0]
REL = GRAPHS[0]["relationships"][0]


@pytest.mark.parametrize("edit, where_what", [
    (lambda g: g.append([1, 2]), "entry 3: expected a JSON object, got list"),
    (lambda g: g[0].pop("image_id"), "entry 0: missing field 'image_id'"),
    (lambda g: g[0].update(image_id="1"),
     "entry 0: field 'image_id': expected an integer id, got '1'"),
    (lambda g: g[0].update(image_id=1.0),
     "entry 0: field 'image_id': expected an integer id, got 1.0"),
    (lambda g: g.append(copy.deepcopy(g[0])), "image id 1: duplicate scene graph"),
    (lambda g: g[0].update(objects={"a": 1}),
     "image id 1: field 'objects': expected a list, got dict"),
    (lambda g: g[0]["objects"][0].pop("object_id"), "image id 1, objects[0]: missing field "
                                                    "'object_id'"),
    (lambda g: g[0]["objects"][0].pop("x"),
     f"image id 1, object id {OBJ['object_id']}: missing field 'x'"),
    (lambda g: g[0]["objects"][0].update(x=math.nan),
     f"image id 1, object id {OBJ['object_id']}: field 'x': expected a finite number, got nan"),
    (lambda g: g[0]["objects"][0].update(h=math.inf),
     f"image id 1, object id {OBJ['object_id']}: field 'h': expected a finite number, got inf"),
    (lambda g: g[0]["objects"][0].update(w="79"),
     f"image id 1, object id {OBJ['object_id']}: field 'w': expected a finite number, got '79'"),
    (lambda g: g[0]["objects"][0].update(y=True),
     f"image id 1, object id {OBJ['object_id']}: field 'y': expected a finite number, got True"),
    (lambda g: g[0]["objects"][0].update(names="clock"),
     f"image id 1, object id {OBJ['object_id']}: field 'names': expected a list of strings, "
     f"got 'clock'"),
    (lambda g: g[0]["objects"][0].update(names=["clock", 3]),
     f"image id 1, object id {OBJ['object_id']}: field 'names': expected a string, got 3"),
    (lambda g: g[0]["relationships"][0].pop("subject_id"),
     f"image id 1, relationship id {REL['relationship_id']}: missing field 'subject_id'"),
    (lambda g: g[0]["relationships"][0].update(object_id=None),
     f"image id 1, relationship id {REL['relationship_id']}: field 'object_id': expected an "
     f"integer id, got None"),
    (lambda g: g[0]["relationships"][0].update(predicate=5),
     f"image id 1, relationship id {REL['relationship_id']}: field 'predicate': expected a "
     f"string, got 5"),
    (lambda g: g[0]["relationships"][0].pop("predicate"),
     f"image id 1, relationship id {REL['relationship_id']}: missing field 'predicate'"),
    (lambda g: g[0]["relationships"][0].update(relationship_id="r1"),
     "image id 1, relationships[0]: field 'relationship_id': expected an integer id, got 'r1'"),
    (lambda g: g[0]["relationships"].append("on"),
     f"image id 1, relationships[{len(GRAPHS[0]['relationships'])}]: expected a JSON object, "
     f"got str"),
])
def test_broken_scene_graphs(tmp_path, edit, where_what):
    sg = tmp_path / "scene_graphs.json"
    assert _message(tmp_path, graphs=_graphs(edit)) == f"{sg}: {where_what}"


def test_image_missing_from_the_image_data(tmp_path):
    img = tmp_path / "image_data.json"
    assert _message(tmp_path, infos=INFOS[1:]) == (
        f"{tmp_path / 'scene_graphs.json'}: image id 1: not in the image data (field 'image_id' "
        f"names no entry of {img}, which gives the image size)")


@pytest.mark.parametrize("edit, where_what", [
    (lambda i: i[0].pop("width"), "image id 1: missing field 'width'"),
    (lambda i: i[0].update(height=0),
     "image id 1: field 'height': expected a positive whole number of pixels, got 0"),
    (lambda i: i[0].update(width=800.5),
     "image id 1: field 'width': expected a positive whole number of pixels, got 800.5"),
    (lambda i: i[0].update(width="800"),
     "image id 1: field 'width': expected a finite number, got '800'"),
    (lambda i: i[0].update(url=5), "image id 1: field 'url': expected a string, got 5"),
    (lambda i: i[0].pop("image_id"), "entry 0: missing field 'image_id'"),
    (lambda i: i.append(dict(i[0])), "image id 1: duplicate entry"),
    (lambda i: i.insert(0, None), "entry 0: expected a JSON object, got NoneType"),
])
def test_broken_image_data(tmp_path, edit, where_what):
    infos = copy.deepcopy(INFOS)
    edit(infos)
    assert _message(tmp_path, infos=infos) == f"{tmp_path / 'image_data.json'}: {where_what}"


def test_width_as_whole_float_and_id_key_are_accepted(tmp_path):
    infos = copy.deepcopy(INFOS)
    infos[0]["width"] = 800.0
    infos[1]["id"] = infos[1].pop("image_id")
    sg, img = _files(tmp_path, infos=infos)
    data, _ = convert_visual_genome(sg, img, VOCAB)
    assert data["images"][0]["width"] == 800 and data["images"][1]["id"] == INFOS[1]["image_id"]


def test_files_that_are_not_json_or_not_lists(tmp_path):
    sg = tmp_path / "scene_graphs.json"
    text = (SAMPLE / "scene_graphs_first100.json").read_text()[:500]  # an interrupted copy
    message = _message(tmp_path, graphs=text)
    assert message.startswith(f"{sg}: not a JSON file (")
    assert _message(tmp_path, graphs={"images": []}) == (
        f"{sg}: expected a JSON list of scene graph entries, got dict")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataFormatError) as info:
        convert_visual_genome(binary, tmp_path / "image_data.json", VOCAB)
    assert str(info.value).startswith(f"{binary}: not a JSON file (")


def test_broken_vocabulary(tmp_path):
    vocab = json.loads(VOCAB.read_text())
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({k: v for k, v in vocab.items() if k != "label_to_idx"}))
    with pytest.raises(DataFormatError) as info:
        load_vg150_vocabulary(path)
    assert str(info.value) == (f"{path}: missing field 'label_to_idx' (expected the VG-SGG "
                               f"dicts file)")
    path.write_text(json.dumps({**vocab, "predicate_to_idx": {"on": "1"}}))
    with pytest.raises(DataFormatError) as info:
        load_vg150_vocabulary(path)
    assert str(info.value) == (f"{path}: field 'predicate_to_idx', entry 'on': expected an "
                               f"integer index, got '1'")
    path.write_text(json.dumps({**vocab, "object_count": [1, 2]}))
    with pytest.raises(DataFormatError) as info:
        load_vg150_vocabulary(path)
    assert str(info.value) == f"{path}: field 'object_count': expected a JSON object, got list"
    path.write_text("[]")
    with pytest.raises(DataFormatError) as info:
        load_vg150_vocabulary(path)
    assert str(info.value) == (f"{path}: top level: expected a JSON object (the VG-SGG dicts "
                               f"file), got list")
    with pytest.raises(FileNotFoundError) as info:
        load_vg150_vocabulary(tmp_path / "none.json")
    assert str(info.value) == f"VG150 vocabulary file not found: {tmp_path / 'none.json'}"


def test_binary_alias_file(tmp_path):
    path = tmp_path / "alias.txt"
    path.write_bytes(b"\xff\xd8\xff\xe0 not text")
    with pytest.raises(DataFormatError) as info:
        load_alias_dict(path)
    assert str(info.value) == (f"{path}: not a UTF-8 text file (expected alias lines "
                               f"'target,alias,…')")


def test_lists_in_memory_are_named_as_such():
    graphs = _graphs(lambda g: g[0]["objects"][0].pop("y"))
    with pytest.raises(DataFormatError) as info:
        convert_visual_genome(graphs, INFOS, VOCAB)
    assert str(info.value) == f"<scene graphs>: image id 1, object id {OBJ['object_id']}: " \
        f"missing field 'y'"


# --------------------------------------------------------------------------- fuzzing

# One image with a few objects and the relationships among them: small enough for many examples.
_SMALL_OBJECTS = GRAPHS[0]["objects"][:6]
_SMALL_IDS = {o["object_id"] for o in _SMALL_OBJECTS}
_SMALL = [{"image_id": 1, "objects": _SMALL_OBJECTS,
           "relationships": [r for r in GRAPHS[0]["relationships"]
                             if r["subject_id"] in _SMALL_IDS or r["object_id"] in _SMALL_IDS]}]
_FIELDS = {
    "graph": ("image_id", "objects", "relationships"),
    "object": ("object_id", "x", "y", "w", "h", "names", "name"),
    "relationship": ("relationship_id", "subject_id", "object_id", "predicate"),
    "info": ("image_id", "width", "height", "url"),
}
_VALUES = st.sampled_from([
    "<delete>", None, "text", "", "1", math.nan, -math.inf, [], [1, "a"], {}, {"x": 1}, True,
    1.5, -1, 0, 10**20])
_VOCAB = load_vg150_vocabulary(VOCAB)  # noqa: F841 - a warm check that the vocabulary loads


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(_FIELDS)), index=st.integers(0, 5),
       field=st.integers(0, 6), value=_VALUES)
def test_corrupted_records_give_the_library_error(kind, index, field, value):
    graphs, infos = copy.deepcopy(_SMALL), copy.deepcopy(INFOS[:1])
    records = {"graph": graphs, "object": graphs[0]["objects"],
               "relationship": graphs[0]["relationships"], "info": infos}[kind]
    record = records[index % len(records)]
    key = _FIELDS[kind][field % len(_FIELDS[kind])]
    if value == "<delete>":
        record.pop(key, None)
    else:
        record[key] = value
    try:
        convert_visual_genome(graphs, infos, VOCAB)
    except DataFormatError as exc:
        # Names the input, the record and the field (or what is wrong with the record).
        message = str(exc)
        assert re.match(r"<(scene graphs|image data)>: (image id -?\d+|entry \d+)[,:]", message)
        assert re.search(r"field '\w+'|duplicate|\]: expected a JSON object", message), message
