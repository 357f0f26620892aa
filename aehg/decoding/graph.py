"""Relation graphs from instances and interaction maps (docs/design.md §4).

:func:`build_graph` links the instances of an image (people from :func:`aehg.group` or objects
from :func:`aehg.decode_objects`) through the peaks of the link heatmaps and returns one
``networkx.MultiDiGraph`` per image.

Example:
    >>> objs = aehg.decode_objects(out.objects.heatmaps, out.objects.tags, out.objects.sizes)
    >>> graphs = aehg.build_graph(objs, out.interactions.heatmaps, out.interactions.src,
    ...                           out.interactions.dst, graph_constraint=True)
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np
import torch

from aehg.decoding.instances import Instances
from aehg.decoding.peaks import (
    as_maps,
    check_float,
    check_int,
    check_kernel,
    device_of,
    find_peaks,
    gather,
)

__all__ = ["build_graph"]


def build_graph(instances: Instances | Sequence[Instances],
                link_heatmaps: np.ndarray | torch.Tensor, src: np.ndarray | torch.Tensor,
                dst: np.ndarray | torch.Tensor, *, nms_kernel: int = 3, top_k: int = 100,
                link_threshold: float = 0.1, max_distance: float = 1.0,
                graph_constraint: bool = False, class_names: Sequence[str] | None = None,
                link_names: Sequence[str] | None = None, slots: int = 1
                ) -> nx.MultiDiGraph | list[nx.MultiDiGraph]:
    """Link instances into a directed relation graph per image.

    1. Link candidates: NMS peaks (``nms_kernel`` window) of the link heatmaps above
       ``link_threshold``, the best ``top_k`` over all link classes.
    2. Each link reads its source and destination embeddings at its pixel. The source is the
       instance whose tag is nearest (L2) to the source embedding, the destination the one
       nearest to the destination embedding, each only when the distance is <
       ``max_distance``. The two ends are never the same instance: when both embeddings are
       nearest to one instance, the pair with the smaller distance sum among (nearest source,
       second-nearest destination) and (second-nearest source, nearest destination) is taken
       (within ``max_distance``), else the link is dropped.
    3. Edge score = link heat × sqrt(max(source score, 0) × max(destination score, 0)).
    4. Per ordered pair only the best-scoring edge of each link class is kept; with
       ``graph_constraint`` only the best-scoring edge of the pair at all.

    Nodes are the instance indices 0…N-1 (every instance is a node, linked or not) with
    ``label`` (int: the instance's class, 0 without labels), ``name`` (with ``class_names``),
    ``score``, ``x``, ``y`` (the centre: the part of its class for labelled instances, else the
    mean of the present parts), ``tag`` (list of E floats), ``box`` (list x1, y1, x2, y2, when
    the instances have boxes) and ``keypoints`` (C lists of x, y, score, for unlabelled
    multi-part instances). Edges are keyed by their link class and carry ``label`` (int),
    ``name`` (with ``link_names``), ``score``, ``heat``, ``src_distance``, ``dst_distance``
    and the link pixel ``x``, ``y``. All values are plain Python ints, floats and strings;
    coordinates are heatmap pixels.

    Args:
        instances: the instances of one image, or a sequence of them (one per image) for
            batched maps.
        link_heatmaps: link (predicate) heatmaps, activated.
        src: source embedding maps.
        dst: destination embedding maps.
        nms_kernel: odd NMS window of the link peaks.
        top_k: maximum number of link candidates per image.
        link_threshold: minimum link heat (>= 0).
        max_distance: maximum embedding distance (exclusive) to an instance tag.
        graph_constraint: keep one link class per ordered pair.
        class_names: names of the instance classes (node ``name``).
        link_names: names of the link classes (edge ``name``).
        slots: S relation slots per pixel (docs/design.md "Slots"): the maps are slot-major
            and every (slot, link class) channel is searched, so each occupied slot of a pixel
            gives its own candidate edge, which reads its embeddings in its slot.

    Shapes:
        link_heatmaps: (S·R, H, W) or (B, S·R, H, W)
        src, dst: (S·E, H, W) or (B, S·E, H, W); E equal to the instances' tag dimension

    Returns:
        One ``networkx.MultiDiGraph``, or a list of them for batched input.

    Raises:
        ValueError: wrong rank or shapes, NaN/infinite values, invalid parameters or names.
    """
    nms_kernel = check_kernel(nms_kernel)
    top_k = check_int(top_k, "top_k", 1)
    link_threshold = check_float(link_threshold, "link_threshold", 0.0)
    max_distance = check_float(max_distance, "max_distance", positive=True)
    slots = check_int(slots, "slots", 1)
    device = device_of(link_heatmaps)
    heat = as_maps(link_heatmaps, "link_heatmaps", (3, 4), "(R, H, W) or (B, R, H, W)", device)
    batched = heat.ndim == 4
    exp = "(B, E, H, W)" if batched else "(E, H, W)"
    maps = []
    for name, value in (("src", src), ("dst", dst)):
        m = as_maps(value, name, (heat.ndim,), exp, device)
        if m.shape[0 if not batched else 1] == 0 or (batched and m.shape[0] != heat.shape[0]) \
                or tuple(m.shape[-2:]) != tuple(heat.shape[-2:]):
            raise ValueError(f"{name}: expected shape {exp} matching link_heatmaps "
                             f"{tuple(heat.shape)}, got {tuple(m.shape)}")
        maps.append(m if batched else m[None])
    src_maps, dst_maps = maps
    if src_maps.shape[1] != dst_maps.shape[1]:
        raise ValueError(f"dst: expected the embedding dimension of src ({src_maps.shape[1]}), "
                         f"got {dst_maps.shape[1]}")
    if heat.shape[-3] % slots or src_maps.shape[1] % slots:
        raise ValueError(f"link_heatmaps, src: expected channels that are multiples of the "
                         f"{slots} slots, got {tuple(heat.shape)} and {tuple(src_maps.shape)}")
    if not batched:
        heat = heat[None]
        if not isinstance(instances, Instances):
            raise ValueError(f"instances: expected an Instances for single-image link maps "
                             f"(R, H, W), got {type(instances).__name__}")
        inst_list = [instances]
    else:
        if isinstance(instances, Instances) or not isinstance(instances, Sequence) \
                or len(instances) != heat.shape[0] \
                or not all(isinstance(i, Instances) for i in instances):
            raise ValueError(f"instances: expected a sequence of {heat.shape[0]} Instances "
                             f"(one per image of the batched link maps)")
        inst_list = list(instances)
    e = src_maps.shape[1] // slots
    for i, inst in enumerate(inst_list):
        if inst.embedding_dim != e:
            where = f"instances[{i}]" if batched else "instances"
            raise ValueError(f"{where}: tag dimension {inst.embedding_dim} differs from the "
                             f"src/dst embedding dimension E = {e}")
        if class_names is not None and inst.labels is not None and len(inst) \
                and int(inst.labels.max()) >= len(class_names):
            raise ValueError(f"class_names: {len(class_names)} names, but an instance has "
                             f"label {int(inst.labels.max())}")
    if link_names is not None and len(link_names) < heat.shape[1] // slots:
        raise ValueError(f"link_names: expected at least R = {heat.shape[1] // slots} names, "
                         f"got {len(link_names)}")
    graphs = [
        _image_graph(inst, heat[b], src_maps[b], dst_maps[b], nms_kernel, top_k,
                     link_threshold, max_distance, graph_constraint, class_names, link_names,
                     slots)
        for b, inst in enumerate(inst_list)
    ]
    return graphs if batched else graphs[0]


def _pair_ends(ds: np.ndarray, dd: np.ndarray, max_distance: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source and destination instance per link (never equal), and which links are kept.

    Shapes:
        ds, dd: (L, N) distances of the links' source / destination embeddings to the tags.
    """
    n_links, n = ds.shape
    if n < 2:
        empty = np.zeros(n_links, np.int64)
        return empty, empty, np.zeros(n_links, bool)
    rows = np.arange(n_links)
    s_order = np.argsort(ds, axis=1, kind="stable")[:, :2]
    d_order = np.argsort(dd, axis=1, kind="stable")[:, :2]
    s1, s2 = s_order[:, 0], s_order[:, 1]
    d1, d2 = d_order[:, 0], d_order[:, 1]
    inf = np.inf

    def cost(s: np.ndarray, d: np.ndarray) -> np.ndarray:
        a, b = ds[rows, s], dd[rows, d]
        return np.where((a < max_distance) & (b < max_distance), a + b, inf)

    same = s1 == d1
    cost_b = cost(s1, d2)  # keep the nearest source
    cost_c = cost(s2, d1)  # keep the nearest destination
    use_c = same & (cost_c < cost_b)
    src = np.where(use_c, s2, s1)
    dst = np.where(same & ~use_c, d2, d1)
    keep = np.where(same, np.minimum(cost_b, cost_c), cost(s1, d1)) < inf
    return src, dst, keep


def _image_graph(inst: Instances, heat: np.ndarray | torch.Tensor,
                 src: np.ndarray | torch.Tensor, dst: np.ndarray | torch.Tensor,
                 nms_kernel: int, top_k: int, link_threshold: float, max_distance: float,
                 graph_constraint: bool, class_names: Sequence[str] | None,
                 link_names: Sequence[str] | None, slots: int = 1) -> nx.MultiDiGraph:
    sr, h, w = heat.shape
    r = sr // slots
    graph = nx.MultiDiGraph()
    _add_nodes(graph, inst, class_names)
    peaks = find_peaks(heat, nms_kernel, link_threshold, top_k, per_channel=False)
    if len(inst) < 2 or peaks.pixel.size == 0:
        return graph
    slot, label_all = peaks.channel // r, peaks.channel % r
    emb_s = gather(src.reshape(slots, -1, h, w), slot, peaks.pixel)
    emb_d = gather(dst.reshape(slots, -1, h, w), slot, peaks.pixel)
    tags = inst.tags.astype(np.float64)
    ds = np.sqrt(((emb_s[:, None, :] - tags[None]) ** 2).sum(-1))
    dd = np.sqrt(((emb_d[:, None, :] - tags[None]) ** 2).sum(-1))
    s_idx, d_idx, keep = _pair_ends(ds, dd, max_distance)
    inst_scores = np.maximum(inst.scores.astype(np.float64), 0.0)
    score = peaks.score * np.sqrt(inst_scores[s_idx] * inst_scores[d_idx])
    link = np.flatnonzero(keep)
    # Best first (ties: link class, then pixel); then the first edge per key wins.
    link = link[np.lexsort((peaks.pixel[link], peaks.channel[link], -score[link]))]
    pairs = np.stack([s_idx[link], d_idx[link]] + ([] if graph_constraint
                                                   else [label_all[link]]), 1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    link = link[np.sort(first)]
    label = label_all[link].tolist()
    pix = peaks.pixel[link]
    columns = dict(score=score[link].tolist(), heat=peaks.score[link].astype(np.float64).tolist(),
                   src_distance=ds[link, s_idx[link]].tolist(),
                   dst_distance=dd[link, d_idx[link]].tolist(),
                   x=(pix % w).astype(np.float64).tolist(),
                   y=(pix // w).astype(np.float64).tolist())
    names = ([{"name": str(link_names[k])} for k in label] if link_names is not None
             else [{}] * len(label))
    graph.add_edges_from(
        (u, v, k, {"label": k, **nm, **{c: col[i] for c, col in columns.items()}})
        for i, (u, v, k, nm) in enumerate(zip(s_idx[link].tolist(), d_idx[link].tolist(),
                                              label, names, strict=True)))
    return graph


def _add_nodes(graph: nx.MultiDiGraph, inst: Instances,
               class_names: Sequence[str] | None) -> None:
    n = len(inst)
    kp = inst.keypoints.astype(np.float64)
    present = kp[:, :, 2] > 0
    if inst.labels is not None:
        labels = inst.labels
        centre = kp[np.arange(n), labels, :2]
    else:
        labels = np.zeros(n, np.int64)
        count = np.maximum(present.sum(1, keepdims=True), 1)
        centre = (kp[:, :, :2] * present[:, :, None]).sum(1) / count
    columns: dict[str, list] = {"label": labels.tolist()}
    if class_names is not None:
        columns["name"] = [str(class_names[k]) for k in columns["label"]]
    columns.update(score=inst.scores.astype(np.float64).tolist(), x=centre[:, 0].tolist(),
                   y=centre[:, 1].tolist(), tag=inst.tags.astype(np.float64).tolist())
    if inst.boxes is not None:
        columns["box"] = inst.boxes.astype(np.float64).tolist()
    if inst.labels is None:
        columns["keypoints"] = kp.tolist()
    graph.add_nodes_from((i, {c: col[i] for c, col in columns.items()}) for i in range(n))
