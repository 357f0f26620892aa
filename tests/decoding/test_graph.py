"""aehg.build_graph on rendered synthetic graphs (people and objects), hand-built corner cases
and random inputs."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_grouping import match_people, render_objects, render_people

import aehg
import aehg.decoding.graph as graphs_mod
from aehg import Instances, build_graph, decode_objects, group
from aehg.export import graphs_equal, read_graphml, read_node_link, write_graphml, write_node_link


def render_links(rng: np.random.Generator, tags: np.ndarray, edges: list[tuple[int, int, int]],
                 num_classes: int, size: int):
    """Link maps for ``edges`` (src, dst, class) between instances with the given tags.

    Every ordered pair gets its own well-separated integer location (shared by the pair's
    classes); the link heat there is a distinct amplitude per edge, and the src/dst maps hold
    the two instances' tags within radius 2 (far random values elsewhere).

    Returns:
        link heat (R, H, W), src (E, H, W), dst (E, H, W), amplitude per edge.
    """
    e = tags.shape[1]
    heat = np.zeros((num_classes, size, size), np.float32)
    src = (rng.normal(0, 5, (e, size, size)) + 80).astype(np.float32)
    dst = (rng.normal(0, 5, (e, size, size)) - 80).astype(np.float32)
    pairs = sorted({(s, d) for s, d, _ in edges})
    g = math.ceil(math.sqrt(len(pairs)))
    step = size // g
    assert step >= 8, "too many pairs for the map"
    where = {p: ((i % g) * step + step // 2, (i // g) * step + step // 2)
             for i, p in enumerate(pairs)}
    amp = rng.permutation(np.linspace(0.4, 1.0, len(edges))).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for (s, d, k), a in zip(edges, amp, strict=True):
        x, y = where[(s, d)]
        heat[k] = np.maximum(heat[k], a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0))
        disk = (xx - x) ** 2 + (yy - y) ** 2 <= 4
        src[:, disk] = tags[s][:, None]
        dst[:, disk] = tags[d][:, None]
    return heat, src, dst, amp


def random_edges(rng: np.random.Generator, n: int, num_pairs: int, num_classes: int,
                 doubles: int) -> list[tuple[int, int, int]]:
    """Distinct ordered pairs (no self-pairs) with one class each, the first ``doubles`` pairs
    with a second, different class."""
    all_pairs = [(s, d) for s in range(n) for d in range(n) if s != d]
    pick = rng.choice(len(all_pairs), num_pairs, replace=False)
    edges = []
    for i, p in enumerate(pick):
        classes = rng.choice(num_classes, 2 if i < doubles else 1, replace=False)
        edges += [(*all_pairs[p], int(k)) for k in classes]
    return edges


def expected_edges(edges, amp, inst_of, scores, constraint):
    """{(u, v, label): score} of the rendered graph in instance indices."""
    out = {}
    for (s, d, k), a in zip(edges, amp, strict=True):
        u, v = int(inst_of[s]), int(inst_of[d])
        out[(u, v, k)] = float(a) * math.sqrt(scores[u] * scores[v])
    if constraint:
        best = {}
        for (u, v, k), sc in out.items():
            if (u, v) not in best or sc > out[best[(u, v)]]:
                best[(u, v)] = (u, v, k)
        out = {key: out[key] for key in best.values()}
    return out


def edge_dict(graph: nx.MultiDiGraph) -> dict:
    return {(u, v, k): d for u, v, k, d in graph.edges(keys=True, data=True)}


def assert_plain(value):
    """Only built-in ints, floats, strings and (nested) lists of them."""
    if isinstance(value, list):
        for v in value:
            assert_plain(v)
    else:
        assert type(value) in (int, float, str), type(value)


def check_graph(graph, inst, edges, amp, inst_of, constraint):
    assert isinstance(graph, nx.MultiDiGraph)
    assert sorted(graph.nodes) == list(range(len(inst)))
    want = expected_edges(edges, amp, inst_of, inst.scores.astype(np.float64), constraint)
    got = edge_dict(graph)
    assert set(got) == set(want)
    for key, d in got.items():
        assert d["label"] == key[2]
        assert d["score"] == pytest.approx(want[key], rel=1e-5)
        assert d["heat"] == pytest.approx(want[key] / math.sqrt(
            inst.scores[key[0]] * inst.scores[key[1]]), rel=1e-5)
        assert d["src_distance"] < 1 and d["dst_distance"] < 1
    for _, d in graph.nodes(data=True):
        for v in d.values():
            assert_plain(v)
    for d in got.values():
        for v in d.values():
            assert_plain(v)


@pytest.mark.parametrize("constraint", [False, True])
@pytest.mark.parametrize("e", [1, 2])
def test_people_graph_is_recovered(constraint, e):
    rng = np.random.default_rng(20 + e)
    heat, tags, pos, ptags = render_people(rng, 9, 5, e)
    inst = group(heat, tags[:, 0] if e == 1 else tags)
    inst_of = np.argsort(match_people(inst, ptags))  # person → instance
    edges = random_edges(rng, 9, 12, 3, doubles=4)
    lh, src, dst, amp = render_links(rng, ptags, edges, 3, 128)
    graph = build_graph(inst, lh, src, dst, graph_constraint=constraint)
    check_graph(graph, inst, edges, amp, inst_of, constraint)
    assert len(graph.edges) == (12 if constraint else 16)
    node = graph.nodes[0]
    assert set(node) == {"label", "score", "x", "y", "tag", "keypoints"}
    np.testing.assert_allclose(node["keypoints"], inst.keypoints[0], rtol=1e-6)
    kp = inst.keypoints[0]
    assert node["x"] == pytest.approx(kp[:, 0].mean()) and node["label"] == 0


@pytest.mark.parametrize("constraint", [False, True])
def test_object_graph_is_recovered(constraint):
    rng = np.random.default_rng(31)
    heat, tags, sizes, gt = render_objects(rng, 12, 5, 8, size=64)
    objs = decode_objects(heat, tags, sizes)
    order = np.argsort(-gt["scores"], kind="stable")  # instance i is object order[i]
    inst_of = np.argsort(order)
    edges = random_edges(rng, 12, 15, 4, doubles=5)
    lh, src, dst, amp = render_links(rng, gt["tags"], edges, 4, 64)
    names = ["cat", "dog", "man", "hat", "cup"]
    preds = ["on", "has", "near", "wears"]
    graph = build_graph(objs, lh, src, dst, graph_constraint=constraint, class_names=names,
                        link_names=preds)
    check_graph(graph, objs, edges, amp, inst_of, constraint)
    node = graph.nodes[3]
    assert set(node) == {"label", "name", "score", "x", "y", "tag", "box"}
    assert node["name"] == names[node["label"]] and node["label"] == int(objs.labels[3])
    np.testing.assert_allclose(node["box"], objs.boxes[3], rtol=1e-6)
    assert all(d["name"] == preds[k] for _, _, k, d in graph.edges(keys=True, data=True))


def _line(tags, links, size=16, e=1):
    """Instances with the given 1-D tags and single-pixel links (class, x, y, heat, s, d)."""
    n = len(tags)
    inst = Instances(np.ones((n, 1, 3), np.float32), np.full(n, 0.81),
                     np.asarray(tags, np.float32).reshape(n, e))
    heat = np.zeros((2, size, size), np.float32)
    src = np.full((e, size, size), 1e3, np.float32)
    dst = np.full((e, size, size), 1e3, np.float32)
    for k, x, y, h, s, d in links:
        heat[k, y, x] = h
        src[:, y, x] = s
        dst[:, y, x] = d
    return inst, heat, src, dst


def test_no_self_links_and_distance_gate():
    # Both embeddings are nearest to instance 0: the next-best distinct pair is taken when it
    # lies within max_distance, else the link is dropped.
    inst, heat, src, dst = _line([0.0, 3.0, 6.0], [(0, 4, 4, 0.9, 0.1, 0.2)])
    assert len(build_graph(inst, heat, src, dst).edges) == 0
    graph = build_graph(inst, heat, src, dst, max_distance=5.0)
    (u, v, k, d), = graph.edges(keys=True, data=True)
    assert (u, v, k) == (0, 1, 0)  # 0.1 + 2.8 beats 2.9 + 0.2
    assert d["src_distance"] == pytest.approx(0.1) and d["dst_distance"] == pytest.approx(2.8)
    assert d["score"] == pytest.approx(0.9 * 0.81) and (d["x"], d["y"]) == (4.0, 4.0)
    inst, heat, src, dst = _line([0.0, 3.0, 6.0], [(1, 4, 4, 0.9, 0.2, 0.1)])
    (u, v, k), = build_graph(inst, heat, src, dst, max_distance=5.0).edges(keys=True)
    assert (u, v, k) == (1, 0, 1)  # 2.8 + 0.1 beats 0.2 + 2.9
    # A link far from every tag, and one below the threshold, give nothing.
    inst, heat, src, dst = _line([0.0, 3.0], [(0, 4, 4, 0.9, 1.2, 3.0), (0, 9, 9, 0.05, 0, 3)])
    assert len(build_graph(inst, heat, src, dst).edges) == 0
    assert len(build_graph(inst, heat, src, dst, max_distance=1.5).edges) == 1
    # One instance (or none): nodes only.
    inst, heat, src, dst = _line([0.0], [(0, 4, 4, 0.9, 0.0, 0.0)])
    graph = build_graph(inst, heat, src, dst)
    assert list(graph.nodes) == [0] and len(graph.edges) == 0


def test_duplicate_links_keep_the_best_and_top_k():
    links = [(0, 2, 2, 0.5, 0.0, 3.0), (0, 10, 10, 0.8, 0.1, 2.9), (1, 6, 12, 0.7, 0.0, 3.0),
             (1, 12, 3, 0.6, 3.0, 0.0)]
    inst, heat, src, dst = _line([0.0, 3.0], links)
    edges = edge_dict(build_graph(inst, heat, src, dst))
    assert set(edges) == {(0, 1, 0), (0, 1, 1), (1, 0, 1)}
    assert edges[(0, 1, 0)]["heat"] == pytest.approx(0.8)  # the better duplicate
    constrained = edge_dict(build_graph(inst, heat, src, dst, graph_constraint=True))
    assert set(constrained) == {(0, 1, 0), (1, 0, 1)}
    assert set(edge_dict(build_graph(inst, heat, src, dst, top_k=2))) == {(0, 1, 0), (0, 1, 1)}


def test_batched_equals_per_image_and_torch(monkeypatch):
    rng = np.random.default_rng(41)
    items = []
    for n in (6, 4):
        heat, tags, sizes, gt = render_objects(rng, n, 3, 2, size=48)
        objs = decode_objects(heat, tags, sizes)
        edges = random_edges(rng, n, 5, 2, doubles=1)
        lh, src, dst, _ = render_links(rng, gt["tags"], edges, 2, 48)
        items.append((objs, lh, src, dst))
    batched = build_graph([i[0] for i in items], *(np.stack([i[k] for i in items])
                                                   for k in (1, 2, 3)))
    assert isinstance(batched, list) and len(batched) == 2
    for graph, (objs, lh, src, dst) in zip(batched, items, strict=True):
        single = build_graph(objs, lh, src, dst)
        assert edge_dict(graph) == edge_dict(single) and len(edge_dict(graph)) >= 5
        assert dict(graph.nodes(data=True)) == dict(single.nodes(data=True))
        on_torch = build_graph(objs, *(torch.from_numpy(x) for x in (lh, src, dst)))
        assert edge_dict(on_torch) == edge_dict(single)
    monkeypatch.setattr(graphs_mod, "device_of", lambda x: torch.device("cpu"))
    objs, lh, src, dst = items[0]
    device_path = build_graph(objs, *(torch.from_numpy(x) for x in (lh, src, dst)))
    assert edge_dict(device_path) == edge_dict(build_graph(objs, lh, src, dst))


def test_bad_inputs_raise():
    inst, heat, src, dst = _line([0.0, 3.0], [(0, 4, 4, 0.9, 0.0, 3.0)])
    with pytest.raises(ValueError, match=r"link_heatmaps: expected shape \(R, H, W\)"):
        build_graph(inst, heat[0], src, dst)
    with pytest.raises(ValueError, match=r"src: expected shape \(E, H, W\) matching"):
        build_graph(inst, heat, src[:, :5], dst)
    with pytest.raises(ValueError, match=r"dst: expected shape \(E, H, W\)"):
        build_graph(inst, heat, src, dst[None])
    with pytest.raises(ValueError, match="dst: expected the embedding dimension of src"):
        build_graph(inst, heat, src, np.concatenate([dst, dst]))
    with pytest.raises(ValueError, match="instances: tag dimension 1 differs"):
        build_graph(inst, heat, np.concatenate([src, src]), np.concatenate([dst, dst]))
    bad = src.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="src: contains NaN"):
        build_graph(inst, heat, bad, dst)
    with pytest.raises(ValueError, match="instances: expected an Instances"):
        build_graph([inst], heat, src, dst)
    with pytest.raises(ValueError, match="instances: expected a sequence of 1 Instances"):
        build_graph([inst, inst], heat[None], src[None], dst[None])
    with pytest.raises(ValueError, match="link_names: expected at least R = 2"):
        build_graph(inst, heat, src, dst, link_names=["on"])
    labelled = Instances(inst.keypoints, inst.scores, inst.tags, np.array([0, 4]))
    with pytest.raises(ValueError, match="class_names: 2 names, but an instance has label 4"):
        build_graph(labelled, heat, src, dst, class_names=["a", "b"])
    for kw in (dict(max_distance=0.0), dict(link_threshold=-1.0), dict(nms_kernel=2),
               dict(top_k=0)):
        with pytest.raises(ValueError, match=next(iter(kw))):
            build_graph(inst, heat, src, dst, **kw)


def test_exported_from_package():
    assert aehg.build_graph is build_graph


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 5), st.integers(1, 3), st.integers(1, 3), st.integers(2, 8),
       st.floats(0.1, 5.0), st.booleans(), st.integers(0, 2**31))
def test_random_graph_properties(n, e, r, size, max_distance, constraint, seed):
    rng = np.random.default_rng(seed)
    inst = Instances(rng.uniform(0, 1, (n, 2, 3)), np.sort(rng.uniform(-0.5, 1, n))[::-1],
                     np.round(rng.normal(0, 1.5, (n, e)), 1))
    heat = np.round(rng.uniform(0, 1, (r, size, size)), 1)
    src = np.round(rng.normal(0, 1.5, (e, size, size)), 1)
    dst = np.round(rng.normal(0, 1.5, (e, size, size)), 1)
    graph = build_graph(inst, heat, src, dst, max_distance=max_distance,
                        graph_constraint=constraint, link_threshold=0.0)
    assert sorted(graph.nodes) == list(range(n))
    seen = set()
    for u, v, k, d in graph.edges(keys=True, data=True):
        assert u != v and 0 <= k < r and d["label"] == k
        assert d["src_distance"] < max_distance and d["dst_distance"] < max_distance
        x, y = int(d["x"]), int(d["y"])
        assert d["heat"] == pytest.approx(heat[k, y, x])
        assert d["src_distance"] == pytest.approx(np.linalg.norm(src[:, y, x] - inst.tags[u]),
                                                  rel=1e-5, abs=1e-6)
        assert d["score"] >= 0
        key = (u, v) if constraint else (u, v, k)
        assert key not in seen
        seen.add(key)
        assert_plain(list(d.values()))


def test_graphs_round_trip_through_export(tmp_path):
    rng = np.random.default_rng(51)
    heat, tags, pos, ptags = render_people(rng, 5, 17, 1)
    inst = group(heat, tags[:, 0])
    lh, src, dst, _ = render_links(rng, ptags, random_edges(rng, 5, 4, 2, doubles=1), 2, 128)
    people = build_graph(inst, lh, src, dst, link_names=["near", "holds"])
    heat, tags, sizes, gt = render_objects(rng, 6, 3, 2)
    objs = decode_objects(heat, tags, sizes)
    lh, src, dst, _ = render_links(rng, gt["tags"], random_edges(rng, 6, 5, 2, doubles=1), 2, 64)
    objects = build_graph(objs, lh, src, dst, class_names=["a", "b", "c"])
    for i, graph in enumerate((people, objects)):
        assert len(graph.edges) >= 4
        write_graphml(tmp_path / f"{i}.graphml", graph)
        write_node_link(tmp_path / f"{i}.json", graph)
        assert graphs_equal(read_graphml(tmp_path / f"{i}.graphml"), graph, atol=1e-9)
        assert graphs_equal(read_node_link(tmp_path / f"{i}.json"), graph, atol=1e-9)
