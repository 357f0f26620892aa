"""Visual Genome → the relation format of docs/design.md §5, with the VG150 vocabulary.

Follows the VG150 preprocessing of Xu et al. (scene-graph-TF-release ``vg_to_imdb.py``):

* names and predicates are cleaned (trimmed, a few non-ASCII characters replaced, lower-cased,
  punctuation removed) and then aliased (each alias line ``target,alias,alias…`` maps every entry
  to its first one);
* an object keeps, among its cleaned names that are in the VG150 vocabulary, the one with the
  highest VG object count (``object_count`` of the vocabulary file); objects with no such name,
  or whose box is empty after clipping to the image, are dropped;
* a relationship is kept when both of its objects are kept, its cleaned predicate is in the
  vocabulary, it is not a self-relation and it does not repeat a kept (subject, object,
  predicate) triplet.

Box merging of near-duplicate objects (an option of the original script) is not done.
:func:`split_train_val_test` gives VG150's order-based test split (the last 30 % of the images)
and a seeded validation split carved out of the rest (5,000 images by default).

Example:
    >>> data, report = convert_visual_genome("scene_graphs.json", "image_data.json",
    ...                                      "VG-SGG-dicts-with-attri.json",
    ...                                      "xu_object_alias.txt", "xu_predicate_alias.txt")
    >>> write_json("vg150.json", data)
"""

from __future__ import annotations

import hashlib
import math
import os
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from aehg.data.coco import DataFormatError
from aehg.io import read_json

__all__ = [
    "clean_phrase",
    "convert_visual_genome",
    "load_alias_dict",
    "load_vg150_vocabulary",
    "split_relation_data",
    "split_train_val_test",
]

_REPLACEMENTS = {"½": "half", "—": "-", "™": "", "¢": "cent", "ç": "c", "û": "u", "é": "e",
                 "°": " degree", "è": "e", "…": ""}
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_phrase(phrase: str) -> str:
    """Trim spaces, replace a few non-ASCII characters, lower-case and drop punctuation."""
    phrase = phrase.strip(" ")
    for k, v in _REPLACEMENTS.items():
        phrase = phrase.replace(k, v)
    return phrase.lower().translate(_PUNCTUATION)


# --------------------------------------------------------------------------- input checks
# Every record is checked before it is used, so that a broken input ends in one DataFormatError
# naming the file, the record (image / object / relationship id) and the field, never in a raw
# KeyError, TypeError or ValueError from deep inside the conversion.


def _fail(source: str, where: str, msg: str) -> NoReturn:
    raise DataFormatError(f"{source}: {where}: {msg}")


def _record(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(source, where, f"expected a JSON object, got {type(value).__name__}")
    return value


def _field(record: dict[str, Any], key: str, source: str, where: str) -> Any:
    if key not in record:
        _fail(source, where, f"missing field {key!r}")
    return record[key]


def _id(value: Any, key: str, source: str, where: str) -> int:
    """An id: a JSON integer (not a string, float or bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(source, where, f"field {key!r}: expected an integer id, got {value!r}")
    return value


def _number(value: Any, key: str, source: str, where: str) -> float:
    """A finite JSON number (Python's json reads NaN and Infinity, so check for them)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(source, where, f"field {key!r}: expected a finite number, got {value!r}")
    return float(value)


def _size(value: Any, key: str, source: str, where: str) -> int:
    """An image side: a positive whole number (``800`` or ``800.0``)."""
    number = _number(value, key, source, where)
    if number <= 0 or not number.is_integer():
        _fail(source, where, f"field {key!r}: expected a positive whole number of pixels, "
                             f"got {value!r}")
    return int(number)


def _list(record: dict[str, Any], key: str, source: str, where: str) -> list[Any]:
    """An optional list field (missing or null: empty)."""
    value = record.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(source, where, f"field {key!r}: expected a list, got {type(value).__name__}")
    return value


def load_alias_dict(path: str | os.PathLike[str] | None) -> dict[str, str]:
    """Alias file → {alias: target}; each line ``target,alias,…`` (target maps to itself).

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not UTF-8 text (naming the file).
    """
    out: dict[str, str] = {}
    if path is None:
        return out
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alias file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: not a UTF-8 text file (expected alias lines "
                              f"'target,alias,…')") from None
    for line in text.splitlines():
        alias = line.strip("\r\n").split(",")
        if not alias or not alias[0]:
            continue
        target = out.get(alias[0], alias[0])
        for a in alias:
            out[a] = target
    return out


def load_vg150_vocabulary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``VG-SGG-dicts-with-attri.json``.

    Returns:
        ``{"label_to_idx", "predicate_to_idx", "object_count"}`` (1-based indices).

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not JSON, a missing field or a non-integer entry (naming the file, the
            field and the entry).
    """
    path = Path(path)
    data = _read_json(path, "VG150 vocabulary")
    source = str(path)
    if not isinstance(data, dict):
        _fail(source, "top level", f"expected a JSON object (the VG-SGG dicts file), got "
                                   f"{type(data).__name__}")
    out: dict[str, Any] = {}
    for key, what in (("label_to_idx", "index"), ("predicate_to_idx", "index"),
                      ("object_count", "count")):
        if key not in data:
            if key == "object_count":  # optional: without it, ties between names go to the first
                out[key] = {}
                continue
            raise DataFormatError(f"{path}: missing field {key!r} (expected the VG-SGG dicts "
                                  f"file)")
        table = data[key]
        if not isinstance(table, dict):
            _fail(source, f"field {key!r}", f"expected a JSON object, got "
                                            f"{type(table).__name__}")
        for name, value in table.items():
            if isinstance(value, bool) or not isinstance(value, int):
                _fail(source, f"field {key!r}, entry {name!r}",
                      f"expected an integer {what}, got {value!r}")
        out[key] = dict(table)
    return out


def _read_json(path: Path, what: str) -> Any:
    try:
        return read_json(path, what)
    except FileNotFoundError:
        raise
    except ValueError as exc:  # read_json's "not a JSON file", which names the file
        raise DataFormatError(str(exc)) from exc


def _load_list(path: str | os.PathLike[str], what: str) -> list[Any]:
    path = Path(path)
    data = _read_json(path, what)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of {what} entries, "
                              f"got {type(data).__name__}")
    return data


def _file_name(url: str | None, image_id: int) -> str:
    """``VG_100K/1.jpg`` from the image URL (the folder the VG image zips unpack to)."""
    parts = (url or "").rstrip("/").split("/")
    if len(parts) >= 2 and parts[-1]:
        return f"{parts[-2]}/{parts[-1]}"
    return f"{image_id}.jpg"


def convert_visual_genome(
    scene_graphs: str | os.PathLike[str] | Iterable[dict],
    image_data: str | os.PathLike[str] | Iterable[dict],
    vocabulary: str | os.PathLike[str],
    object_alias: str | os.PathLike[str] | None = None,
    predicate_alias: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Convert Visual Genome scene graphs to the relation format.

    Args:
        scene_graphs: ``scene_graphs.json`` (path or the loaded list).
        image_data: ``image_data.json`` (path or the loaded list): sizes and URLs.
        vocabulary: ``VG-SGG-dicts-with-attri.json`` (150 objects, 50 predicates).
        object_alias, predicate_alias: alias files (None: no aliasing).

    Returns:
        ``(data, report)``: the relation-format dict (COCO instances JSON + ``predicate_categories``
        + ``relationships``; category and predicate ids are the 1-based VG150 indices;
        annotations keep the VG id as ``vg_object_id``) and the counts of what was kept and
        dropped (also stored in ``data["info"]["counts"]``).

    Raises:
        FileNotFoundError: an input file is missing.
        DataFormatError: malformed input (not JSON, a record that is not an object, a missing
            field, an id that is not an integer, a coordinate that is not a finite number, an
            image without image data); the message names the file, the record (image id,
            object id, relationship id) and the field.
    """
    vocab = load_vg150_vocabulary(vocabulary)
    obj_alias = load_alias_dict(object_alias)
    pred_alias = load_alias_dict(predicate_alias)
    label_to_idx, pred_to_idx = vocab["label_to_idx"], vocab["predicate_to_idx"]
    counts_vg = vocab["object_count"]
    if isinstance(scene_graphs, (str, os.PathLike)):
        graphs, graph_source = _load_list(scene_graphs, "scene graph"), str(scene_graphs)
    else:
        graphs, graph_source = list(scene_graphs), "<scene graphs>"
    if isinstance(image_data, (str, os.PathLike)):
        infos, info_source = _load_list(image_data, "image data"), str(image_data)
    else:
        infos, info_source = list(image_data), "<image data>"
    size_of: dict[int, tuple[str, int, int]] = {}  # image id -> file name, width, height
    for i, info in enumerate(infos):
        where = f"entry {i}"
        info = _record(info, info_source, where)
        key = "image_id" if "image_id" in info or "id" not in info else "id"
        iid = _id(_field(info, key, info_source, where), key, info_source, where)
        where = f"image id {iid}"
        if iid in size_of:
            _fail(info_source, where, "duplicate entry")
        width = _size(_field(info, "width", info_source, where), "width", info_source, where)
        height = _size(_field(info, "height", info_source, where), "height", info_source, where)
        url = info.get("url")
        if url is not None and not isinstance(url, str):
            _fail(info_source, where, f"field 'url': expected a string, got {url!r}")
        size_of[iid] = (_file_name(url, iid), width, height)

    report = {k: 0 for k in (
        "images", "objects_total", "objects_kept", "objects_dropped_vocabulary",
        "objects_dropped_box", "relations_total", "relations_kept",
        "relations_dropped_missing_object", "relations_dropped_object",
        "relations_dropped_predicate", "relations_dropped_self", "relations_dropped_duplicate")}

    def obj_label(names: list[str]) -> str | None:
        best, best_count = None, -1
        for name in names:
            label = clean_phrase(name)
            label = obj_alias.get(label, label)
            if label in label_to_idx and counts_vg.get(label, 0) > best_count:
                best, best_count = label, counts_vg.get(label, 0)
        return best

    def obj_names(obj: dict[str, Any], where: str) -> list[str]:
        names = obj.get("names")
        if names is None or names == []:
            name = obj.get("name")
            names = [] if name is None else [name]
            key = "name"
        else:
            key = "names"
            if not isinstance(names, list):
                _fail(graph_source, where, f"field 'names': expected a list of strings, got "
                                           f"{names!r}")
        for name in names:
            if not isinstance(name, str):
                _fail(graph_source, where, f"field {key!r}: expected a string, got {name!r}")
        return names

    images, annotations, relationships = [], [], []
    converted: set[int] = set()
    for i, graph in enumerate(graphs):
        graph = _record(graph, graph_source, f"entry {i}")
        iid = _id(_field(graph, "image_id", graph_source, f"entry {i}"), "image_id",
                  graph_source, f"entry {i}")
        where = f"image id {iid}"
        if iid not in size_of:
            _fail(graph_source, where, f"not in the image data (field 'image_id' names no "
                                       f"entry of {info_source}, which gives the image size)")
        if iid in converted:
            _fail(graph_source, where, "duplicate scene graph")
        converted.add(iid)
        file_name, width, height = size_of[iid]
        images.append({"id": iid, "file_name": file_name, "width": width, "height": height})
        report["images"] += 1
        kept: dict[int, int] = {}        # VG object id -> annotation id
        known: set[int] = set()
        for k, obj in enumerate(_list(graph, "objects", graph_source, where)):
            report["objects_total"] += 1
            at = f"{where}, objects[{k}]"
            obj = _record(obj, graph_source, at)
            vg_id = _id(_field(obj, "object_id", graph_source, at), "object_id", graph_source,
                        at)
            at = f"{where}, object id {vg_id}"
            x, y, w, h = (_number(_field(obj, key, graph_source, at), key, graph_source, at)
                          for key in ("x", "y", "w", "h"))
            known.add(vg_id)
            label = obj_label(obj_names(obj, at))
            if label is None:
                report["objects_dropped_vocabulary"] += 1
                continue
            x0 = min(max(x, 0.0), width)
            y0 = min(max(y, 0.0), height)
            x1 = min(max(x + w, 0.0), width)
            y1 = min(max(y + h, 0.0), height)
            if x1 <= x0 or y1 <= y0:
                report["objects_dropped_box"] += 1
                continue
            ann_id = len(annotations) + 1
            kept[vg_id] = ann_id
            annotations.append({
                "id": ann_id, "image_id": iid, "category_id": label_to_idx[label],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0, "vg_object_id": vg_id,
            })
            report["objects_kept"] += 1
        seen: set[tuple[int, int, int]] = set()
        for k, rel in enumerate(_list(graph, "relationships", graph_source, where)):
            report["relations_total"] += 1
            at = f"{where}, relationships[{k}]"
            rel = _record(rel, graph_source, at)
            rel_id = rel.get("relationship_id")
            if rel_id is not None:
                at = f"{where}, relationship id {_id(rel_id, 'relationship_id', graph_source, at)}"
            s_vg, o_vg = (_id(_field(rel, key, graph_source, at), key, graph_source, at)
                          for key in ("subject_id", "object_id"))
            predicate = _field(rel, "predicate", graph_source, at)
            if not isinstance(predicate, str):
                _fail(graph_source, at, f"field 'predicate': expected a string, got "
                                        f"{predicate!r}")
            if s_vg not in known or o_vg not in known:
                report["relations_dropped_missing_object"] += 1
                continue
            if s_vg not in kept or o_vg not in kept:
                report["relations_dropped_object"] += 1
                continue
            pred = clean_phrase(predicate)
            pred = pred_alias.get(pred, pred)
            if pred not in pred_to_idx:
                report["relations_dropped_predicate"] += 1
                continue
            if s_vg == o_vg:
                report["relations_dropped_self"] += 1
                continue
            triplet = (kept[s_vg], kept[o_vg], pred_to_idx[pred])
            if triplet in seen:
                report["relations_dropped_duplicate"] += 1
                continue
            seen.add(triplet)
            relationships.append({
                "id": len(relationships) + 1, "image_id": iid, "subject_id": triplet[0],
                "object_id": triplet[1], "predicate_id": triplet[2],
                "vg_relationship_id": rel_id,
            })
            report["relations_kept"] += 1
    categories = [{"id": i, "name": n, "supercategory": "object"}
                  for n, i in sorted(label_to_idx.items(), key=lambda kv: kv[1])]
    predicates = [{"id": i, "name": n} for n, i in sorted(pred_to_idx.items(),
                                                          key=lambda kv: kv[1])]
    data = {
        "info": {"description": "Visual Genome (Krishna et al. 2017, CC BY 4.0) converted to "
                 "the aehg relation format with the VG150 vocabulary", "counts": dict(report)},
        "licenses": [{"id": 1, "name": "CC BY 4.0",
                      "url": "https://creativecommons.org/licenses/by/4.0/"}],
        "images": images, "annotations": annotations, "categories": categories,
        "predicate_categories": predicates, "relationships": relationships,
    }
    return data, report


def _subset(data: dict[str, Any], images: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """``data`` restricted to ``images`` (their annotations and relationships), named ``split``."""
    ids = {im["id"] for im in images}
    out = {k: v for k, v in data.items() if k not in ("images", "annotations", "relationships")}
    out["info"] = {**data.get("info", {}), "split": split}
    out["images"] = list(images)
    out["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    out["relationships"] = [r for r in data.get("relationships", []) if r["image_id"] in ids]
    return out


def split_relation_data(data: dict[str, Any], val_fraction: float = 0.3
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split relation-format data by image order: the first ``1 - val_fraction`` of the images
    for training, the rest for validation (the order-based 70/30 split of VG150, whose second
    part is the split people report as test; :func:`split_train_val_test` carves a validation
    split out of the first part).

    Returns:
        ``(train, val)``: two relation-format dicts with the same categories and predicates.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    images = data["images"]
    cut = int(round(len(images) * (1.0 - val_fraction)))
    return _subset(data, images[:cut], "train"), _subset(data, images[cut:], "val")


def _draw_key(seed: int, image_id: Any) -> bytes:
    # A hash rather than a NumPy stream: the same images for a seed on every platform and
    # NumPy version, and an image's rank does not depend on the order of the others.
    return hashlib.sha256(f"{seed}/{image_id}".encode()).digest()


def split_train_val_test(data: dict[str, Any], test_fraction: float = 0.3, num_val: int = 5000,
                         seed: int = 0, *, num_val_key: str = "num_val",
                         test_fraction_key: str = "test_fraction"
                         ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """VG150's train/test split, with a validation split carved out of train.

    The last ``test_fraction`` of the images (in file order) are the test split, kept as is
    (Scene-Graph-Benchmark's convention: validation comes out of train, test is never touched).
    Of the images before them, ``num_val`` drawn by ``seed`` become the validation split and
    the others the training split; both keep the file order. The draw ranks the training
    images by ``sha256(f"{seed}/{image_id}")`` and takes the first ``num_val``, so it is the
    same on every platform. ``num_val = 0`` gives an empty validation split.

    Args:
        data: relation-format data (:func:`convert_visual_genome`).
        test_fraction: share of the images, the last ones, for the test split.
        num_val: validation images to draw from the training part.
        seed: the draw.
        num_val_key, test_fraction_key: what errors call these (``--num-val`` for the tool).

    Returns:
        ``(train, val, test)``: relation-format dicts with the same categories and predicates;
        ``info["split"]`` names the split.

    Raises:
        ValueError: ``test_fraction`` outside [0, 1); ``num_val`` negative, or not smaller than
            the number of training images (the message names ``num_val_key`` and the count).
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"{test_fraction_key}: expected a value in [0, 1), got {test_fraction}")
    if isinstance(num_val, bool) or not isinstance(num_val, int) or num_val < 0:
        raise ValueError(f"{num_val_key}: expected a non-negative number of images, "
                         f"got {num_val!r}")
    images = data["images"]
    cut = int(round(len(images) * (1.0 - test_fraction)))
    pool = images[:cut]
    if num_val >= len(pool):
        raise ValueError(
            f"{num_val_key}: expected fewer validation images than the {len(pool)} training "
            f"images ({len(images)} images minus the test split of {len(images) - cut}), got "
            f"{num_val}; lower {num_val_key}")
    order = sorted(range(len(pool)), key=lambda i: _draw_key(seed, pool[i]["id"]))
    is_val = [False] * len(pool)
    for i in order[:num_val]:
        is_val[i] = True
    train = [im for im, v in zip(pool, is_val, strict=True) if not v]
    val = [im for im, v in zip(pool, is_val, strict=True) if v]
    return (_subset(data, train, "train"), _subset(data, val, "val"),
            _subset(data, images[cut:], "test"))
