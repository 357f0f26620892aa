"""Graph export: networkx node-link JSON, GraphML, and the relation-results JSON
(docs/design.md §5).

The graphs are the per-image ``networkx.MultiDiGraph`` of :func:`aehg.build_graph`: nodes are
instances (``label``, ``score``, ``box`` x1 y1 x2 y2 and/or ``keypoints`` (C, 3), …), edges
are links (``label`` = predicate/link class, ``score``), graph attributes describe the image
(``image_id``, ``file_name``, …). Every format reads back into an equal graph
(:func:`graphs_equal`):

* **node-link JSON** (``networkx.node_link_data(..., edges="edges")`` plus the same edge list
  under ``"links"``): arrays become nested lists and are turned back into numpy arrays on
  reading. Both keys are written because networkx changed the default key: 3.4 and 3.5 read
  ``"links"`` (with a FutureWarning), 3.6 on read ``"edges"``; with both, the file loads with
  plain ``networkx.node_link_graph(data)`` on every networkx that ``pyproject.toml`` admits
  (``>=3.4``) and with ``edges="links"`` or ``edges="edges"``. Raising the lower bound to 3.6
  would not be enough: ``edges="links"`` readers still need the ``"links"`` key.
* **GraphML**: scalar attributes only. A box becomes ``x1, y1, x2, y2``; any other array
  attribute ``a`` of shape S becomes ``a_0 … a_{n-1}`` (row-major) and the shapes are recorded
  in the graph attribute ``aehg_meta`` (a JSON string, with the node-id type and graph kind)
  so reading restores them.
* **relation-results JSON**: the COCO-style relation format of docs/design.md §5 with a ``score`` on
  every annotation and relationship; node labels and edge labels are mapped to
  ``category_id`` / ``predicate_id`` through the category lists.
* **Scene-Graph-Benchmark's custom output** (:func:`write_sgb_custom_prediction`):
  ``custom_prediction.json`` and ``custom_data_info.json``, the pair that SGB's
  ``TEST.CUSTUM_EVAL`` writes and that SGB-based tools read (layout in the function's doc).
  Write-only: it keeps too little of a graph to read one back.

Example:
    >>> write_node_link("out/000001.json", graph)
    >>> assert graphs_equal(read_node_link("out/000001.json"), graph)
    >>> write_relation_results("out/relations.json", graphs, categories, predicates)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from aehg.io import read_json, write_json, write_text

__all__ = [
    "from_node_link",
    "graphs_equal",
    "graphs_to_relation_results",
    "read_graphml",
    "read_node_link",
    "read_relation_results",
    "relation_results_to_graphs",
    "sgb_custom_data_info",
    "sgb_custom_prediction",
    "to_node_link",
    "triplet_scores",
    "write_graphml",
    "write_node_link",
    "write_relation_results",
    "write_sgb_custom_prediction",
]

BOX_KEYS = ("x1", "y1", "x2", "y2")
META_ATTR = "aehg_meta"
# The two ways of ranking a predicted triplet (eval.triplet_score, docs/design.md §6).
TRIPLET_SCORES = ("aehg", "sgb")
# Scene-Graph-Benchmark's custom output: file names and the name of its class 0.
SGB_PREDICTION_FILE = "custom_prediction.json"
SGB_DATA_INFO_FILE = "custom_data_info.json"
SGB_BACKGROUND = "__background__"


# --------------------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    """numpy → built-in Python types (recursively), for JSON."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, list, tuple))


def _from_json(value: Any) -> Any:
    """Lists (of numbers) back to numpy arrays."""
    if isinstance(value, list):
        try:
            arr = np.asarray(value)
        except ValueError:
            return value
        if arr.dtype.kind in "biuf":
            return arr
    return value


def _values_equal(a: Any, b: Any, atol: float) -> bool:
    if _is_array(a) or _is_array(b):
        try:
            a, b = np.asarray(a), np.asarray(b)
        except ValueError:
            return False
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
            return bool(np.allclose(a, b, rtol=0.0, atol=atol, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return bool(abs(float(a) - float(b)) <= atol or (np.isnan(a) and np.isnan(b)))
    return a == b


def _attrs_equal(a: Mapping[str, Any], b: Mapping[str, Any], atol: float) -> bool:
    return set(a) == set(b) and all(_values_equal(a[k], b[k], atol) for k in a)


def graphs_equal(a: nx.Graph, b: nx.Graph, atol: float = 0.0) -> bool:
    """Same kind, graph attributes, nodes with attributes, and edges (with keys) with attributes.

    Arrays compare by value (a list equals the numpy array holding the same numbers); numbers
    compare within ``atol``.
    """
    if a.is_directed() != b.is_directed() or a.is_multigraph() != b.is_multigraph():
        return False
    ga = {k: v for k, v in a.graph.items() if k != META_ATTR}
    gb = {k: v for k, v in b.graph.items() if k != META_ATTR}
    if not _attrs_equal(ga, gb, atol):
        return False
    if set(a.nodes) != set(b.nodes):
        return False
    if not all(_attrs_equal(a.nodes[n], b.nodes[n], atol) for n in a.nodes):
        return False
    if a.is_multigraph():
        ea = {(u, v, k): d for u, v, k, d in a.edges(keys=True, data=True)}
        eb = {(u, v, k): d for u, v, k, d in b.edges(keys=True, data=True)}
    else:
        ea = {(u, v): d for u, v, d in a.edges(data=True)}
        eb = {(u, v): d for u, v, d in b.edges(data=True)}
    return set(ea) == set(eb) and all(_attrs_equal(ea[e], eb[e], atol) for e in ea)


# --------------------------------------------------------------------------- node-link JSON


def to_node_link(graph: nx.Graph) -> dict[str, Any]:
    """The JSON-ready node-link dict of ``graph``, edges under ``"edges"`` and ``"links"``.

    Both keys hold equal lists (separate copies), so that plain ``node_link_graph(data)``
    reads it on networkx 3.4/3.5 (default ``"links"``) and 3.6+ (default ``"edges"``).
    """
    data = _plain(nx.node_link_data(graph, edges="edges"))
    data["links"] = _plain(data["edges"])  # _plain rebuilds containers: an independent copy
    return data


def from_node_link(data: Mapping[str, Any]) -> nx.Graph:
    """Rebuild a graph from node-link data (lists become numpy arrays).

    Reads :func:`to_node_link` output and any ``node_link_data`` output: the edges are taken
    from ``"edges"``, or from ``"links"`` (networkx's key before 3.6) when there is no
    ``"edges"``.
    """
    if "nodes" not in data:
        raise ValueError("node-link data: missing 'nodes' (expected the output of "
                         "networkx.node_link_data)")
    edges = "edges" if "edges" in data else "links"
    if edges not in data:
        raise ValueError("node-link data: missing 'edges' (or 'links', networkx's key before "
                         "3.6) (expected the output of networkx.node_link_data)")
    graph = nx.node_link_graph(dict(data), directed=bool(data.get("directed", True)),
                               multigraph=bool(data.get("multigraph", True)), edges=edges)
    for attrs in _all_attr_dicts(graph):
        for k, v in list(attrs.items()):
            attrs[k] = _from_json(v)
    return graph


def _all_attr_dicts(graph: nx.Graph):
    yield graph.graph
    for _, d in graph.nodes(data=True):
        yield d
    for *_, d in graph.edges(data=True):
        yield d


def write_node_link(path: str | os.PathLike[str], graph: nx.Graph,
                    indent: int | None = None) -> Path:
    """Write ``graph`` as node-link JSON, atomically."""
    return write_json(path, to_node_link(graph), indent=indent)


def read_node_link(path: str | os.PathLike[str]) -> nx.Graph:
    """Read a graph written by :func:`write_node_link`."""
    return from_node_link(read_json(path, "node-link JSON"))


# --------------------------------------------------------------------------- GraphML


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: GraphML stores scalars, numbers arrays and boxes only; "
                    f"got {type(value).__name__}")


def _flatten(attrs: Mapping[str, Any], shapes: dict[str, list[int]], where: str
             ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if value is None:
            continue  # GraphML has no null; absent on reading
        if _is_array(value):
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"{where}.{name}: only numeric arrays can be written to GraphML")
            if name == "box" and arr.shape == (4,):
                out.update(zip(BOX_KEYS, (float(v) for v in arr), strict=True))
                shapes[name] = [4]
                continue
            known = shapes.get(name)
            if known is not None and known != list(arr.shape):
                raise ValueError(f"{where}.{name}: shape {arr.shape} differs from another "
                                 f"element's {tuple(known)}; GraphML needs one shape per "
                                 f"attribute")
            shapes[name] = list(arr.shape)
            kind = float if arr.dtype.kind == "f" else (bool if arr.dtype.kind == "b" else int)
            out.update((f"{name}_{i}", kind(v)) for i, v in enumerate(arr.reshape(-1)))
        else:
            out[name] = _scalar(value, f"{where}.{name}")
    return out


def _unflatten(attrs: dict[str, Any], shapes: Mapping[str, list[int]]) -> dict[str, Any]:
    out = dict(attrs)
    for name, shape in shapes.items():
        if name == "box" and list(shape) == [4]:
            if all(k in out for k in BOX_KEYS):
                out[name] = np.array([out.pop(k) for k in BOX_KEYS], dtype=np.float64)
            continue
        size = int(np.prod(shape))
        keys = [f"{name}_{i}" for i in range(size)]
        if all(k in out for k in keys):
            out[name] = np.array([out.pop(k) for k in keys]).reshape(shape)
    return out


def write_graphml(path: str | os.PathLike[str], graph: nx.Graph) -> Path:
    """Write ``graph`` as GraphML (scalar attributes; arrays flattened, see module doc)."""
    shapes: dict[str, dict[str, list[int]]] = {"graph": {}, "node": {}, "edge": {}}
    flat = graph.__class__()
    flat.graph.update(_flatten(graph.graph, shapes["graph"], "graph"))
    for n, d in graph.nodes(data=True):
        flat.add_node(n, **_flatten(d, shapes["node"], f"node {n}"))
    if graph.is_multigraph():
        for u, v, k, d in graph.edges(keys=True, data=True):
            flat.add_edge(u, v, key=k, **_flatten(d, shapes["edge"], f"edge {u}->{v}"))
    else:
        for u, v, d in graph.edges(data=True):
            flat.add_edge(u, v, **_flatten(d, shapes["edge"], f"edge {u}->{v}"))
    flat.graph[META_ATTR] = json.dumps({"arrays": shapes, "node_type": _node_type_name(graph),
                                        "multigraph": graph.is_multigraph()})
    text = "\n".join(nx.generate_graphml(flat, prettyprint=True))
    return write_text(path, text + "\n")


def _node_type_name(graph: nx.Graph) -> str:
    nodes = list(graph.nodes)
    if all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in nodes):
        return "int"
    if all(isinstance(n, str) for n in nodes):
        return "str"
    raise TypeError("GraphML export: node ids must be all ints or all strings")


def read_graphml(path: str | os.PathLike[str]) -> nx.Graph:
    """Read a graph written by :func:`write_graphml` (arrays and boxes restored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GraphML file not found: {path}")
    try:
        probe = nx.read_graphml(path)
    except Exception as exc:  # networkx raises several types for malformed XML
        raise ValueError(f"{path}: not a readable GraphML file ({exc})") from exc
    try:
        meta = json.loads(probe.graph.get(META_ATTR, "{}"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed {META_ATTR} graph attribute ({exc})") from exc
    node_type = int if meta.get("node_type", "str") == "int" else str
    graph = nx.read_graphml(path, node_type=node_type,
                            force_multigraph=bool(meta.get("multigraph", probe.is_multigraph())))
    graph.graph.pop(META_ATTR, None)
    for key in ("node_default", "edge_default"):  # added by networkx's reader
        if not graph.graph.get(key, True):
            graph.graph.pop(key)
    shapes = meta.get("arrays", {})
    graph.graph.update(_unflatten(dict(graph.graph), shapes.get("graph", {})))
    for _, d in graph.nodes(data=True):
        new = _unflatten(d, shapes.get("node", {}))
        d.clear()
        d.update(new)
    for *_, d in graph.edges(data=True):
        new = _unflatten(d, shapes.get("edge", {}))
        d.clear()
        d.update(new)
    return graph


# --------------------------------------------------------------------------- relation results


def _category_ids(categories: Sequence[Mapping[str, Any]] | None, what: str) -> list[int] | None:
    if categories is None:
        return None
    ids = []
    for i, c in enumerate(categories):
        if "id" not in c:
            raise ValueError(f"{what}[{i}]: missing 'id'")
        ids.append(int(c["id"]))
    return ids


def graphs_to_relation_results(graphs: Sequence[nx.Graph],
                               categories: Sequence[Mapping[str, Any]] | None = None,
                               predicate_categories: Sequence[Mapping[str, Any]] | None = None,
                               ) -> dict[str, Any]:
    """Per-image graphs → the relation-results JSON dict (docs/design.md §5).

    Node label ``i`` becomes ``categories[i]["id"]``, edge label ``j`` becomes
    ``predicate_categories[j]["id"]`` (identity when a list is None). Each graph needs an
    ``image_id`` graph attribute. Annotations carry ``bbox`` (x, y, w, h) when the node has a
    ``box``, ``keypoints`` (flat x, y, score) when it has ``keypoints``, and every other scalar
    node attribute; relationships carry ``subject_id``/``object_id`` (annotation ids),
    ``predicate_id`` and ``score``.
    """
    cat_ids = _category_ids(categories, "categories")
    pred_ids = _category_ids(predicate_categories, "predicate_categories")
    images, annotations, relationships = [], [], []
    for gi, graph in enumerate(graphs):
        if "image_id" not in graph.graph:
            raise ValueError(f"graphs[{gi}]: missing the 'image_id' graph attribute")
        image_id = _plain(graph.graph["image_id"])
        images.append({"id": image_id} | {k: _plain(v) for k, v in graph.graph.items()})
        ann_id: dict[Any, int] = {}
        for node, d in graph.nodes(data=True):
            ann: dict[str, Any] = {"id": len(annotations) + 1, "image_id": image_id,
                                   "node": _plain(node)}
            for k, v in d.items():
                if k == "label":
                    lab = int(v)
                    if cat_ids is not None and not 0 <= lab < len(cat_ids):
                        raise ValueError(f"graphs[{gi}] node {node}: label {lab} outside the "
                                         f"{len(cat_ids)} categories")
                    ann["category_id"] = cat_ids[lab] if cat_ids is not None else lab
                elif k == "box":
                    x1, y1, x2, y2 = (float(t) for t in np.asarray(v).reshape(4))
                    ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
                elif k == "keypoints":
                    ann["keypoints"] = np.asarray(v, dtype=np.float64).reshape(-1).tolist()
                    ann["num_keypoints"] = int(np.asarray(v).reshape(-1, 3).shape[0])
                else:
                    ann[k] = _plain(v)
            ann_id[node] = ann["id"]
            annotations.append(ann)
        edges = graph.edges(keys=True, data=True) if graph.is_multigraph() else \
            ((u, v, None, d) for u, v, d in graph.edges(data=True))
        for u, v, key, d in edges:
            rel: dict[str, Any] = {"id": len(relationships) + 1, "image_id": image_id,
                                   "subject_id": ann_id[u], "object_id": ann_id[v]}
            if key is not None:
                rel["key"] = _plain(key)
            for k, val in d.items():
                if k == "label":
                    lab = int(val)
                    if pred_ids is not None and not 0 <= lab < len(pred_ids):
                        raise ValueError(f"graphs[{gi}] edge {u}->{v}: label {lab} outside "
                                         f"the {len(pred_ids)} predicate categories")
                    rel["predicate_id"] = pred_ids[lab] if pred_ids is not None else lab
                else:
                    rel[k] = _plain(val)
            relationships.append(rel)
    return {"images": images, "annotations": annotations,
            "categories": _plain(list(categories)) if categories is not None else [],
            "predicate_categories": (_plain(list(predicate_categories))
                                     if predicate_categories is not None else []),
            "relationships": relationships}


def relation_results_to_graphs(data: Mapping[str, Any]) -> list[nx.MultiDiGraph]:
    """Relation-results dict → one ``MultiDiGraph`` per entry of ``images`` (inverse of above)."""
    for key in ("images", "annotations", "relationships"):
        if key not in data:
            raise ValueError(f"relation results: missing {key!r}")
    cat_index = {int(c["id"]): i for i, c in enumerate(data.get("categories") or [])}
    pred_index = {int(c["id"]): i for i, c in enumerate(data.get("predicate_categories") or [])}
    graphs: dict[Any, nx.MultiDiGraph] = {}
    for img in data["images"]:
        attrs = {k: _from_json(v) for k, v in img.items() if k != "id"}
        graphs[img["id"]] = nx.MultiDiGraph(**attrs)
    nodes: dict[int, tuple[Any, Any]] = {}
    for i, ann in enumerate(data["annotations"]):
        if ann.get("image_id") not in graphs:
            raise ValueError(f"annotations[{i}]: image_id {ann.get('image_id')} is not in "
                             f"'images'")
        d: dict[str, Any] = {}
        for k, v in ann.items():
            if k in ("id", "image_id", "node", "num_keypoints"):
                continue
            if k == "category_id":
                d["label"] = cat_index.get(int(v), int(v)) if cat_index else int(v)
            elif k == "bbox":
                x, y, w, h = (float(t) for t in v)
                d["box"] = np.array([x, y, x + w, y + h])
            elif k == "keypoints":
                d["keypoints"] = np.asarray(v, dtype=np.float64).reshape(-1, 3)
            else:
                d[k] = _from_json(v)
        node = ann.get("node", ann["id"])
        graphs[ann["image_id"]].add_node(node, **d)
        nodes[int(ann["id"])] = (ann["image_id"], node)
    for i, rel in enumerate(data["relationships"]):
        for end in ("subject_id", "object_id"):
            if int(rel.get(end, -1)) not in nodes:
                raise ValueError(f"relationships[{i}]: {end} {rel.get(end)} is not an "
                                 f"annotation id")
        image_id, u = nodes[int(rel["subject_id"])]
        _, v = nodes[int(rel["object_id"])]
        d = {}
        for k, val in rel.items():
            if k in ("id", "image_id", "subject_id", "object_id", "key"):
                continue
            if k == "predicate_id":
                d["label"] = pred_index.get(int(val), int(val)) if pred_index else int(val)
            else:
                d[k] = _from_json(val)
        graphs[image_id].add_edge(u, v, key=rel.get("key"), **d)
    return list(graphs.values())


def write_relation_results(path: str | os.PathLike[str], graphs: Sequence[nx.Graph],
                           categories: Sequence[Mapping[str, Any]] | None = None,
                           predicate_categories: Sequence[Mapping[str, Any]] | None = None
                           ) -> Path:
    """Write :func:`graphs_to_relation_results` atomically."""
    return write_json(path, graphs_to_relation_results(graphs, categories, predicate_categories))


def read_relation_results(path: str | os.PathLike[str]) -> list[nx.MultiDiGraph]:
    """Read a relation-results JSON file back into graphs."""
    return relation_results_to_graphs(read_json(path, "relation results"))



# --------------------------------------------------------------------------- triplet scores


def triplet_scores(graph: nx.Graph, kind: str = "aehg") -> np.ndarray:
    """The ranking score of every edge of ``graph``, in ``graph.edges`` order.

    * ``"aehg"``: the edge's ``score``, which :func:`aehg.build_graph` sets to
      ``heat · sqrt(max(score_src, 0) · max(score_dst, 0))`` (the geometric mean of the two
      object scores keeps the product on the scale of one heat).
    * ``"sgb"``: ``heat · max(score_src, 0) · max(score_dst, 0)``, Scene-Graph-Benchmark's
      ``rel_scores × obj_scores[s] × obj_scores[o]`` with the link heat as the relation score.
      The clamp at 0 only matters for a negative ``detection_threshold``; it keeps a pair of
      negative object scores from ranking high.

    Both give the same best predicate for a given pair (its two object scores are fixed), so
    they differ only in how pairs rank against each other.

    Raises:
        ValueError: unknown ``kind``; an edge without ``score`` (aehg) or ``heat`` (sgb), or a
            node without ``score`` (sgb), naming the edge or node and the key.

    Shapes:
        -> (number of edges,) float64
    """
    if kind not in TRIPLET_SCORES:
        raise ValueError(f"triplet_score: expected 'aehg' or 'sgb', got {kind!r}")
    out = []
    for u, v, d in graph.edges(data=True):
        need = "score" if kind == "aehg" else "heat"
        if need not in d:
            raise ValueError(f"edge {u}->{v}: missing {need!r}, which the {kind!r} triplet "
                             f"score needs (build_graph sets it)")
        if kind == "aehg":
            out.append(float(d["score"]))
            continue
        ends = []
        for n in (u, v):
            if "score" not in graph.nodes[n]:
                raise ValueError(f"node {n}: missing 'score', which the 'sgb' triplet score of "
                                 f"edge {u}->{v} needs")
            ends.append(max(float(graph.nodes[n]["score"]), 0.0))
        out.append(float(d["heat"]) * ends[0] * ends[1])
    return np.asarray(out, dtype=np.float64)


# --------------------------------------------------------------------------- SGB custom output


def _node_box(d: Mapping[str, Any], where: str) -> list[float]:
    """xyxy box of a node: its ``box``, else a one-point box at its centre ``x``, ``y``."""
    if d.get("box") is not None:
        return [float(t) for t in np.asarray(d["box"], dtype=np.float64).reshape(4)]
    if "x" in d and "y" in d:
        x, y = float(d["x"]), float(d["y"])
        return [x, y, x, y]
    raise ValueError(f"{where}: expected a 'box' or a centre 'x', 'y'")


def sgb_custom_prediction(graphs: Sequence[nx.Graph], num_classes: int, num_predicates: int, *,
                          triplet_score: str = "aehg",
                          link_class_heat: Sequence[Mapping[Any, Any] | None] | None = None
                          ) -> dict[str, dict[str, list]]:
    """Per-image graphs → the ``custom_prediction.json`` dict of Scene-Graph-Benchmark.

    The layout is SGB's (``custom_sgg_post_precessing`` in ``maskrcnn_benchmark/engine/
    inference.py``, read by its ``visualization/3.visualize_custom_SGDet.ipynb``): one entry per
    image, keyed by its position ``"0"``, ``"1"``, … (the index into ``idx_to_files`` of
    :func:`sgb_custom_data_info`), each with

    * ``bbox``: [[x1, y1, x2, y2], …] of the objects, sorted by decreasing score (ties keep the
      node order); a node without ``box`` gets the one-point box of its centre;
    * ``bbox_labels``: the object classes, **1-based**: class index + 1, because SGB's class 0 is
      ``__background__`` (``ind_to_classes[bbox_labels[i]]`` is the name; for data converted
      from SGB this is the VG150 label of the h5 file);
    * ``bbox_scores``: the object scores (node ``score``, the peak heat);
    * ``rel_pairs``: [[subject, object], …], 0-based positions in ``bbox`` (after the sort);
    * ``rel_labels``: the predicates, **1-based** (link class + 1; 0 is SGB's background);
    * ``rel_scores``: the relation's own score, the link ``heat`` (SGB: the predicate
      probability), so ``rel_scores × bbox_scores[s] × bbox_scores[o]`` is the ``sgb`` triplet
      score, as SGB computes it;
    * ``rel_all_scores``: per relation R + 1 numbers, SGB's width: 0 for the background (aehg has
      no background class), then the link heatmaps of all R predicates at the relation's link
      pixel (``link_class_heat``), so ``rel_all_scores[i][rel_labels[i]] == rel_scores[i]``.
      Without those values (a graph read back from a file) the row is 0 except the relation's
      own heat at ``rel_labels[i]``.

    Relations are sorted by decreasing :func:`triplet_scores` of ``triplet_score`` (ties keep
    the edge order), so the first K are the K that R@K counts. Two deviations from SGB, both
    because aehg links are heatmap peaks rather than classified pairs: SGB sorts by
    ``rel_scores`` and lists one row per pair with ``rel_labels`` the arg-max of
    ``rel_all_scores``; here a pair may have one row per predicate peak, and another predicate
    can be larger at a row's pixel. Coordinates are original-image pixels (SGB writes its
    resized test image's: short side 600, long side at most 1000).

    Args:
        graphs: per-image graphs of :func:`aehg.build_graph` (in image pixels).
        num_classes, num_predicates: C and R; labels outside ``[0, C)`` / ``[0, R)`` are errors.
        triplet_score: ``"aehg"`` or ``"sgb"`` (``eval.triplet_score``).
        link_class_heat: per graph None or a mapping ``(u, v, key) → R`` link heats (the
            ``Prediction.link_class_heat`` of :func:`aehg.inference.decode_predictions`).

    Raises:
        ValueError: a label out of range, a row of ``link_class_heat`` that is not R long, a
            missing score (naming the graph, node or edge), or mismatched lengths.
    """
    if link_class_heat is not None and len(link_class_heat) != len(graphs):
        raise ValueError(f"link_class_heat: expected {len(graphs)} entries (one per graph), "
                         f"got {len(link_class_heat)}")
    out: dict[str, dict[str, list]] = {}
    for gi, graph in enumerate(graphs):
        nodes = list(graph.nodes(data=True))
        for node, d in nodes:
            if "score" not in d:
                raise ValueError(f"graphs[{gi}] node {node}: missing 'score'")
            lab = int(d.get("label", 0))
            if not 0 <= lab < num_classes:
                raise ValueError(f"graphs[{gi}] node {node}: label {lab} outside the "
                                 f"{num_classes} classes")
        order = sorted(range(len(nodes)), key=lambda i: -float(nodes[i][1]["score"]))
        position = {nodes[i][0]: rank for rank, i in enumerate(order)}
        image: dict[str, list] = {
            "bbox": [_node_box(nodes[i][1], f"graphs[{gi}] node {nodes[i][0]}") for i in order],
            "bbox_labels": [int(nodes[i][1].get("label", 0)) + 1 for i in order],
            "bbox_scores": [float(nodes[i][1]["score"]) for i in order],
            "rel_pairs": [], "rel_labels": [], "rel_scores": [], "rel_all_scores": [],
        }
        edges = list(graph.edges(keys=True, data=True)) if graph.is_multigraph() else \
            [(u, v, None, d) for u, v, d in graph.edges(data=True)]
        ranking = triplet_scores(graph, triplet_score)
        heats = None if link_class_heat is None else link_class_heat[gi]
        for e in np.argsort(-ranking, kind="stable").tolist():
            u, v, key, d = edges[e]
            where = f"graphs[{gi}] edge {u}->{v}"
            if "label" not in d:
                raise ValueError(f"{where}: missing 'label' (the predicate)")
            lab = int(d["label"])
            if not 0 <= lab < num_predicates:
                raise ValueError(f"{where}: label {lab} outside the {num_predicates} predicates")
            if "heat" not in d:
                raise ValueError(f"{where}: missing 'heat' (the relation score of SGB's "
                                 f"rel_scores)")
            row = np.zeros(num_predicates + 1)
            if heats is not None and (u, v, key) in heats:
                values = np.asarray(heats[(u, v, key)], dtype=np.float64).reshape(-1)
                if values.shape[0] != num_predicates:
                    raise ValueError(f"{where}: link_class_heat: expected {num_predicates} "
                                     f"values (one per predicate), got {values.shape[0]}")
                row[1:] = values
            else:
                row[lab + 1] = float(d["heat"])
            image["rel_pairs"].append([position[u], position[v]])
            image["rel_labels"].append(lab + 1)
            image["rel_scores"].append(float(d["heat"]))
            image["rel_all_scores"].append(row.tolist())
        out[str(gi)] = image
    return out


def sgb_custom_data_info(files: Sequence[str | os.PathLike[str]], class_names: Sequence[str],
                         predicate_names: Sequence[str]) -> dict[str, list[str]]:
    """The ``custom_data_info.json`` dict of Scene-Graph-Benchmark.

    ``idx_to_files``: the picture of each image index (as given: SGB writes the paths it read);
    ``ind_to_classes`` / ``ind_to_predicates``: ``"__background__"`` then the names, so that the
    1-based labels of :func:`sgb_custom_prediction` index them directly.
    """
    return {"idx_to_files": [str(f) for f in files],
            "ind_to_classes": [SGB_BACKGROUND] + [str(n) for n in class_names],
            "ind_to_predicates": [SGB_BACKGROUND] + [str(n) for n in predicate_names]}


def write_sgb_custom_prediction(graphs: Sequence[nx.Graph], class_names: Sequence[str],
                                predicate_names: Sequence[str],
                                out_dir: str | os.PathLike[str],
                                files: Sequence[str | os.PathLike[str]], *,
                                triplet_score: str = "aehg",
                                link_class_heat: Sequence[Mapping[Any, Any] | None] | None
                                = None) -> tuple[Path, Path]:
    """Write ``custom_prediction.json`` and ``custom_data_info.json`` into ``out_dir``.

    Both are built before either is written, and each is written atomically. See
    :func:`sgb_custom_prediction` (layout, 1-based labels) and :func:`sgb_custom_data_info`.

    Args:
        graphs: per-image graphs; image index i is ``graphs[i]`` and ``files[i]``.
        class_names, predicate_names: the C object and R predicate names.
        out_dir: the folder.
        files: the picture of each graph.
        triplet_score, link_class_heat: as :func:`sgb_custom_prediction`.

    Returns:
        The paths of ``custom_prediction.json`` and ``custom_data_info.json``.

    Raises:
        ValueError: ``files`` not one per graph; see :func:`sgb_custom_prediction`.
    """
    if len(files) != len(graphs):
        raise ValueError(f"files: expected {len(graphs)} entries (one per graph), got "
                         f"{len(files)}")
    prediction = sgb_custom_prediction(graphs, len(class_names), len(predicate_names),
                                       triplet_score=triplet_score,
                                       link_class_heat=link_class_heat)
    info = sgb_custom_data_info(files, class_names, predicate_names)
    out = Path(out_dir)
    return (write_json(out / SGB_PREDICTION_FILE, prediction),
            write_json(out / SGB_DATA_INFO_FILE, info))
