"""Graph export round trips: node-link JSON, GraphML and relation-results JSON."""

from __future__ import annotations

import inspect
import json
import warnings
import xml.etree.ElementTree as ET

import networkx as nx
import numpy as np
import pytest

from aehg.export import (
    graphs_equal,
    graphs_to_relation_results,
    read_graphml,
    read_node_link,
    read_relation_results,
    relation_results_to_graphs,
    sgb_custom_prediction,
    triplet_scores,
    write_graphml,
    write_node_link,
    write_relation_results,
    write_sgb_custom_prediction,
)

CATS = [{"id": 3, "name": "person"}, {"id": 7, "name": "horse"}, {"id": 9, "name": "hat"}]
PREDS = [{"id": 1, "name": "riding"}, {"id": 4, "name": "wearing"}]


def _scene_graph(image_id=42):
    rng = np.random.default_rng(image_id)
    g = nx.MultiDiGraph(image_id=image_id, file_name=f"{image_id:012d}.jpg")
    xy = rng.uniform(0, 100, (3, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 50, (3, 2)).astype(np.float32)], 1)
    for i, (lab, box) in enumerate(zip([0, 1, 2], boxes, strict=True)):
        g.add_node(i, label=lab, score=float(rng.uniform()), box=box,
                   tag=rng.normal(size=2).astype(np.float32))
    g.add_edge(0, 1, label=0, score=0.9)
    g.add_edge(0, 1, label=1, score=0.2)  # a second predicate on the same pair
    g.add_edge(0, 2, label=1, score=0.7)
    return g


def _pose_graph():
    rng = np.random.default_rng(0)
    g = nx.MultiDiGraph(image_id=785)
    for i in range(2):
        g.add_node(i, label=0, score=float(rng.uniform()),
                   keypoints=rng.uniform(0, 50, (17, 3)).astype(np.float32))
    return g


@pytest.mark.parametrize("make", [_scene_graph, _pose_graph])
def test_node_link_round_trip(tmp_path, make):
    g = make()
    path = tmp_path / "g.json"
    write_node_link(path, g)
    data = json.loads(path.read_text())
    # Both keys, equal: networkx 3.4/3.5 read "links" by default, 3.6+ "edges".
    assert data["edges"] == data["links"] and len(data["edges"]) == g.number_of_edges()
    back = read_node_link(path)
    assert isinstance(back, nx.MultiDiGraph)
    assert graphs_equal(back, g)
    assert isinstance(back.nodes[0]["score"], float)


def _edge_list(graph):
    return sorted((u, v, k, d["label"], d["score"]) for u, v, k, d in
                  graph.edges(keys=True, data=True))


def test_node_link_loads_with_plain_networkx_on_every_admitted_version(tmp_path):
    g = _scene_graph()
    path = tmp_path / "g.json"
    write_node_link(path, g)
    data = json.loads(path.read_text())
    with warnings.catch_warnings():
        # networkx 3.4/3.5 warn that their default key will change; the file works either way.
        warnings.simplefilter("ignore", FutureWarning)
        plain = nx.node_link_graph(data)
    for h in (plain, nx.node_link_graph(data, edges="links"),
              nx.node_link_graph(data, edges="edges")):
        assert isinstance(h, nx.MultiDiGraph)
        assert sorted(h.nodes) == [0, 1, 2]
        assert [h.nodes[n]["label"] for n in range(3)] == [0, 1, 2]
        assert _edge_list(h) == _edge_list(g) and len(_edge_list(g)) == 3
    # The old default itself: the keyword of networkx < 3.6 where it still exists, and on any
    # version a reader that knows only "links" (drop "edges" so nothing else can be read).
    if "link" in inspect.signature(nx.node_link_graph).parameters:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
            assert _edge_list(nx.node_link_graph(data, link="links")) == _edge_list(g)
    only_links = {k: v for k, v in data.items() if k != "edges"}
    assert _edge_list(nx.node_link_graph(only_links, edges="links")) == _edge_list(g)
    # read_node_link reads files with either key alone (older networkx writes only "links").
    for key in ("edges", "links"):
        one = tmp_path / f"{key}.json"
        one.write_text(json.dumps({k: v for k, v in data.items() if k != key}))
        assert graphs_equal(read_node_link(one), g)
    one.write_text(json.dumps({"nodes": [], "directed": True}))
    with pytest.raises(ValueError, match=r"node-link data: missing 'edges' \(or 'links'"):
        read_node_link(one)


@pytest.mark.parametrize("make", [_scene_graph, _pose_graph])
def test_graphml_round_trip_with_scalar_attributes(tmp_path, make):
    g = make()
    path = tmp_path / "g.graphml"
    write_graphml(path, g)
    # Only scalar GraphML attributes; boxes spelt x1, y1, x2, y2.
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    keys = {k.get("attr.name"): k.get("attr.type")
            for k in ET.parse(path).getroot().findall("g:key", ns)}
    assert set(keys.values()) <= {"int", "long", "float", "double", "boolean", "string"}
    if "box" in g.nodes[0]:
        assert {"x1", "y1", "x2", "y2"} <= set(keys)
        assert "box" not in keys
    back = read_graphml(path)
    assert isinstance(back, nx.MultiDiGraph)
    assert sorted(back.nodes) == sorted(g.nodes) and isinstance(next(iter(back.nodes)), int)
    assert graphs_equal(back, g)  # float32 values survive exactly through float64 text


def test_graphs_equal_detects_differences():
    g = _scene_graph()
    h = _scene_graph()
    assert graphs_equal(g, h)
    h.nodes[1]["box"] = h.nodes[1]["box"] + 1
    assert not graphs_equal(g, h)
    h = _scene_graph()
    h.remove_edge(0, 1, key=1)
    assert not graphs_equal(g, h)
    h = _scene_graph()
    h.edges[0, 2, 0]["label"] = 0
    assert not graphs_equal(g, h)
    h = _scene_graph()
    h.graph["image_id"] = 1
    assert not graphs_equal(g, h)


def test_relation_results_format_and_round_trip(tmp_path):
    graphs = [_scene_graph(42), _scene_graph(43)]
    data = graphs_to_relation_results(graphs, CATS, PREDS)
    # docs/design.md §5: COCO instances + predicate_categories + relationships, scored.
    assert data["categories"] == CATS and data["predicate_categories"] == PREDS
    assert [im["id"] for im in data["images"]] == [42, 43]
    assert len(data["annotations"]) == 6 and len(data["relationships"]) == 6
    ann = data["annotations"][1]
    assert ann["category_id"] == 7 and ann["image_id"] == 42
    box = graphs[0].nodes[1]["box"]
    np.testing.assert_allclose(ann["bbox"], [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                               rtol=1e-6)
    rel = data["relationships"][1]
    ids = {a["id"]: a for a in data["annotations"]}
    assert ids[rel["subject_id"]]["category_id"] == 3
    assert ids[rel["object_id"]]["category_id"] == 7
    assert rel["predicate_id"] == 4 and rel["score"] == 0.2
    # Annotation ids are unique over the whole file, relationships name annotation ids.
    assert len(ids) == 6
    path = tmp_path / "relations.json"
    write_relation_results(path, graphs, CATS, PREDS)
    back = read_relation_results(path)
    assert len(back) == 2
    for b, g in zip(back, graphs, strict=True):
        assert graphs_equal(b, g, atol=1e-9)


def test_relation_results_pose_keypoints_round_trip():
    g = _pose_graph()
    data = graphs_to_relation_results([g], [{"id": 1, "name": "person"}])
    assert len(data["annotations"][0]["keypoints"]) == 51
    assert data["annotations"][0]["category_id"] == 1
    (back,) = relation_results_to_graphs(data)
    assert graphs_equal(back, g, atol=1e-9)


def test_relation_results_errors():
    g = _scene_graph()
    with pytest.raises(ValueError, match="label 2 outside the 2 categories"):
        graphs_to_relation_results([g], CATS[:2], PREDS)
    g.graph.pop("image_id")
    with pytest.raises(ValueError, match=r"graphs\[0\]: missing the 'image_id'"):
        graphs_to_relation_results([g], CATS, PREDS)
    data = graphs_to_relation_results([_scene_graph()], CATS, PREDS)
    data["relationships"][0]["object_id"] = 999
    with pytest.raises(ValueError, match=r"relationships\[0\]: object_id 999"):
        relation_results_to_graphs(data)


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="GraphML file not found"):
        read_graphml(tmp_path / "x.graphml")
    with pytest.raises(FileNotFoundError, match="node-link JSON file not found"):
        read_node_link(tmp_path / "x.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not a JSON file"):
        read_node_link(bad)
    bad.write_text("{}")
    with pytest.raises(ValueError, match="missing 'nodes'"):
        read_node_link(bad)


def test_round_trips_of_build_graph_output(tmp_path):
    """The graphs aehg.build_graph makes (lists, names, keyed parallel edges) survive all three
    formats."""
    from aehg.decoding import Instances, build_graph

    n, c, e = 3, 2, 2
    kp = np.zeros((n, c, 3), np.float32)
    labels = np.array([0, 1, 1])
    centres = np.array([[4.0, 4.0], [12.0, 4.0], [8.0, 12.0]], np.float32)
    kp[np.arange(n), labels, :2] = centres
    kp[np.arange(n), labels, 2] = [0.9, 0.8, 0.7]
    tags = np.array([[0, 0], [5, 0], [0, 5]], np.float32)
    boxes = np.concatenate([centres - 2, centres + 2], 1)
    inst = Instances(kp, kp[np.arange(n), labels, 2], tags, labels, boxes)
    heat = np.zeros((2, 16, 16), np.float32)
    src = np.zeros((e, 16, 16), np.float32)
    dst = np.zeros((e, 16, 16), np.float32)
    for r, (y, x, s, d) in enumerate([(4, 8, 0, 1), (8, 6, 0, 2)]):  # two link classes
        heat[r, y, x] = 0.9
        src[:, y, x], dst[:, y, x] = tags[s], tags[d]
    heat[1, 4, 8] = 0.5  # a second predicate on the pair (0, 1)
    g = build_graph(inst, heat, src, dst, class_names=["a", "b"], link_names=["on", "near"])
    g.graph.update(image_id=7, file_name="x.png", height=64, width=64)
    assert g.number_of_edges() == 3 and g.number_of_edges(0, 1) == 2
    write_node_link(tmp_path / "g.json", g)
    assert graphs_equal(read_node_link(tmp_path / "g.json"), g)
    write_graphml(tmp_path / "g.graphml", g)
    assert graphs_equal(read_graphml(tmp_path / "g.graphml"), g)
    cats = [{"id": 10, "name": "a"}, {"id": 20, "name": "b"}]
    preds = [{"id": 1, "name": "on"}, {"id": 2, "name": "near"}]
    (back,) = relation_results_to_graphs(graphs_to_relation_results([g], cats, preds))
    assert graphs_equal(back, g, atol=1e-9)


def _sgb_graph():
    """Nodes in no score order (0.25, 1.0, 0.64; node 2 without a box). networkx lists the
    edges by source node: 1 -0-> 0, then 2 -1-> 1.

    aehg: 1 -0-> 0 = 0.8·sqrt(1·0.25) = 0.4 before 2 -1-> 1 = 0.45·sqrt(0.64·1) = 0.36;
    sgb:  2 -1-> 1 = 0.45·0.64·1 = 0.288 before 1 -0-> 0 = 0.8·1·0.25 = 0.2.
    """
    g = nx.MultiDiGraph(image_id=3)
    g.add_node(0, label=2, score=0.25, box=np.array([1.0, 2.0, 3.0, 4.0]))
    g.add_node(1, label=0, score=1.0, box=np.array([5.0, 6.0, 7.0, 8.0]))
    g.add_node(2, label=1, score=0.64, x=9.5, y=10.5)
    g.add_edge(2, 1, key=1, label=1, heat=0.45, score=0.36)
    g.add_edge(1, 0, key=0, label=0, heat=0.8, score=0.4)
    return g


def test_triplet_scores_both_formulas():
    g = _sgb_graph()
    assert triplet_scores(g).tolist() == [0.4, 0.36]  # build_graph's edge score, as stored
    assert triplet_scores(g, "sgb") == pytest.approx([0.2, 0.288], rel=1e-12)


def test_sgb_custom_prediction_layout_with_1_based_labels():
    g = _sgb_graph()
    boxes = {"bbox": [[5.0, 6.0, 7.0, 8.0], [9.5, 10.5, 9.5, 10.5], [1.0, 2.0, 3.0, 4.0]],
             "bbox_labels": [1, 2, 3], "bbox_scores": [1.0, 0.64, 0.25]}
    out = sgb_custom_prediction([g], 3, 2)
    assert out == {"0": {**boxes, "rel_pairs": [[0, 2], [1, 0]], "rel_labels": [1, 2],
                         "rel_scores": [0.8, 0.45],
                         "rel_all_scores": [[0.0, 0.8, 0.0], [0.0, 0.0, 0.45]]}}
    heats = {(1, 0, 0): np.array([0.8, 0.1]), (2, 1, 1): np.array([0.3, 0.45])}
    out = sgb_custom_prediction([g], 3, 2, triplet_score="sgb", link_class_heat=[heats])
    assert out == {"0": {**boxes, "rel_pairs": [[1, 0], [0, 2]], "rel_labels": [2, 1],
                         "rel_scores": [0.45, 0.8],
                         "rel_all_scores": [[0.0, 0.3, 0.45], [0.0, 0.8, 0.1]]}}


def test_write_sgb_custom_prediction_files_and_errors(tmp_path):
    g, other = _sgb_graph(), nx.MultiDiGraph(image_id=4)
    other.add_node(0, label=1, score=0.5, box=[0, 0, 1, 1])
    pred_path, info_path = write_sgb_custom_prediction(
        [g, other], ["person", "horse", "hat"], ["riding", "wearing"], tmp_path / "out",
        ["imgs/a.jpg", tmp_path / "b.png"])
    assert (pred_path.name, info_path.name) == ("custom_prediction.json",
                                                "custom_data_info.json")
    pred = json.loads(pred_path.read_text())
    assert list(pred) == ["0", "1"]
    assert pred["1"] == {"bbox": [[0.0, 0.0, 1.0, 1.0]], "bbox_labels": [2],
                         "bbox_scores": [0.5], "rel_pairs": [], "rel_labels": [],
                         "rel_scores": [], "rel_all_scores": []}
    assert json.loads(info_path.read_text()) == {
        "idx_to_files": ["imgs/a.jpg", str(tmp_path / "b.png")],
        "ind_to_classes": ["__background__", "person", "horse", "hat"],
        "ind_to_predicates": ["__background__", "riding", "wearing"]}
    # Errors name the graph, node or edge; nothing is written.
    with pytest.raises(ValueError, match=r"^graphs\[0\] node 0: label 2 outside the 2 "
                       r"classes$"):
        write_sgb_custom_prediction([g], ["a", "b"], ["r", "w"], tmp_path / "bad", ["a"])
    with pytest.raises(ValueError, match=r"^graphs\[0\] edge 2->1: label 1 outside the 1 "
                       r"predicates$"):
        write_sgb_custom_prediction([g], ["a", "b", "c"], ["r"], tmp_path / "bad", ["a"])
    with pytest.raises(ValueError, match=r"^files: expected 1 entries \(one per graph\), "
                       r"got 2$"):
        write_sgb_custom_prediction([g], ["a", "b", "c"], ["r", "w"], tmp_path / "bad",
                                    ["a", "b"])
    with pytest.raises(ValueError, match=r"^graphs\[0\] edge 2->1: link_class_heat: expected 2 "
                       r"values \(one per predicate\), got 3$"):
        sgb_custom_prediction([g], 3, 2, link_class_heat=[{(2, 1, 1): [0.1, 0.2, 0.3]}])
    assert not (tmp_path / "bad").exists()
