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

Example:
    >>> data, report = convert_visual_genome("scene_graphs.json", "image_data.json",
    ...                                      "VG-SGG-dicts-with-attri.json",
    ...                                      "xu_object_alias.txt", "xu_predicate_alias.txt")
    >>> write_json("vg150.json", data)
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "clean_phrase",
    "convert_visual_genome",
    "load_alias_dict",
    "load_vg150_vocabulary",
    "split_relation_data",
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


def load_alias_dict(path: str | os.PathLike[str] | None) -> dict[str, str]:
    """Alias file → {alias: target}; each line ``target,alias,…`` (target maps to itself)."""
    out: dict[str, str] = {}
    if path is None:
        return out
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alias file not found: {path}")
    for line in path.read_text(encoding="utf-8").splitlines():
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
        FileNotFoundError, ValueError: missing file or field (naming both).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VG150 vocabulary file not found: {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("label_to_idx", "predicate_to_idx"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"{path}: missing field {key!r} (expected the VG-SGG dicts file)")
    return {"label_to_idx": {k: int(v) for k, v in data["label_to_idx"].items()},
            "predicate_to_idx": {k: int(v) for k, v in data["predicate_to_idx"].items()},
            "object_count": {k: int(v) for k, v in data.get("object_count", {}).items()}}


def _load_list(path: str | os.PathLike[str], what: str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {what} entries, "
                         f"got {type(data).__name__}")
    return data


def _file_name(info: dict) -> str:
    """``VG_100K/1.jpg`` from the image URL (the folder the VG image zips unpack to)."""
    url = info.get("url") or ""
    parts = url.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-1]:
        return f"{parts[-2]}/{parts[-1]}"
    return f"{info['image_id']}.jpg"


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
        ValueError: malformed input, naming the file / image id / field.
    """
    vocab = load_vg150_vocabulary(vocabulary)
    obj_alias = load_alias_dict(object_alias)
    pred_alias = load_alias_dict(predicate_alias)
    label_to_idx, pred_to_idx = vocab["label_to_idx"], vocab["predicate_to_idx"]
    counts_vg = vocab["object_count"]
    graphs = _load_list(scene_graphs, "scene graph") \
        if isinstance(scene_graphs, (str, os.PathLike)) else list(scene_graphs)
    infos = _load_list(image_data, "image data") \
        if isinstance(image_data, (str, os.PathLike)) else list(image_data)
    size_of: dict[int, dict] = {}
    for info in infos:
        iid = info.get("image_id", info.get("id"))
        if iid is None or "width" not in info or "height" not in info:
            raise ValueError(f"image data entry {info!r:.80}: expected image_id, width, height")
        size_of[int(iid)] = info

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

    images, annotations, relationships = [], [], []
    for graph in graphs:
        if "image_id" not in graph:
            raise ValueError(f"scene graph entry {len(images)}: missing field 'image_id'")
        iid = int(graph["image_id"])
        info = size_of.get(iid)
        if info is None:
            raise ValueError(f"image id {iid}: not in the image data (needed for its size)")
        width, height = int(info["width"]), int(info["height"])
        images.append({"id": iid, "file_name": _file_name(info), "width": width,
                       "height": height})
        report["images"] += 1
        kept: dict[int, int] = {}        # VG object id -> annotation id
        known: set[int] = set()
        for obj in graph.get("objects", []):
            report["objects_total"] += 1
            vg_id = int(obj["object_id"])
            known.add(vg_id)
            names = obj.get("names") or ([obj["name"]] if "name" in obj else [])
            label = obj_label(names)
            if label is None:
                report["objects_dropped_vocabulary"] += 1
                continue
            x0 = min(max(float(obj["x"]), 0.0), width)
            y0 = min(max(float(obj["y"]), 0.0), height)
            x1 = min(max(float(obj["x"]) + float(obj["w"]), 0.0), width)
            y1 = min(max(float(obj["y"]) + float(obj["h"]), 0.0), height)
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
        for rel in graph.get("relationships", []):
            report["relations_total"] += 1
            s_vg, o_vg = int(rel["subject_id"]), int(rel["object_id"])
            if s_vg not in known or o_vg not in known:
                report["relations_dropped_missing_object"] += 1
                continue
            if s_vg not in kept or o_vg not in kept:
                report["relations_dropped_object"] += 1
                continue
            pred = clean_phrase(str(rel.get("predicate", "")))
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
                "vg_relationship_id": rel.get("relationship_id"),
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


def split_relation_data(data: dict[str, Any], val_fraction: float = 0.3
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split relation-format data by image order: the first ``1 - val_fraction`` of the images
    for training, the rest for validation (the order-based 70/30 split of VG150).

    Returns:
        ``(train, val)``: two relation-format dicts with the same categories and predicates.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    images = data["images"]
    cut = int(round(len(images) * (1.0 - val_fraction)))
    out = []
    for part in (images[:cut], images[cut:]):
        ids = {im["id"] for im in part}
        out.append({
            **{k: v for k, v in data.items()
               if k not in ("images", "annotations", "relationships")},
            "images": part,
            "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
            "relationships": [r for r in data["relationships"] if r["image_id"] in ids],
        })
    return out[0], out[1]
