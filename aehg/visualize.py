"""Drawing predictions with OpenCV: skeletons per person, labelled boxes, relation graphs,
legends and overview sheets.

Images are ``uint8`` BGR arrays ``(H, W, 3)`` as read by ``cv2.imread``; every function draws on
a copy and returns it. :func:`render_prediction` is what inference writes: the picture enlarged
to at least :data:`MIN_DRAWING_SIDE` pixels on its long side (so that a 128 px input still has
readable labels), the prediction drawn on it with line widths, markers and fonts in proportion
to the picture, and a legend panel on the right naming the part / class / predicate colours
used. :func:`overview_sheet` puts such drawings on one grid.

Colours: people and object classes take :func:`color_for` (person i, class c), parts
:func:`part_color` and predicates :func:`predicate_color` (a second palette, half a hue step
away from the first, so that predicate r is not drawn in class r's colour).

Example:
    >>> canvas = render_prediction(image, pred.graph, info.class_names, info.predicate_names,
    ...                            skeleton=info.skeleton)
    >>> save_image("out/000001.png", canvas)
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import networkx as nx
import numpy as np

from aehg.io import atomic_write
from aehg.keypoints import COCO_SKELETON

__all__ = [
    "MIN_DRAWING_SIDE",
    "LegendEntry",
    "color_for",
    "draw_boxes",
    "draw_graph",
    "draw_legend",
    "draw_people",
    "legend_entries",
    "overview_band",
    "overview_sheet",
    "part_color",
    "predicate_color",
    "render_prediction",
    "save_image",
    "upscale",
]

# Pictures smaller than this on their long side are enlarged before drawing: at the 128 px of
# the synthetic demos, text of any legible size covers the objects it names.
MIN_DRAWING_SIDE = 512

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GOLDEN = 0.618033988749895
_PANEL = (32, 32, 32)  # legend and overview background
_PANEL_TEXT = (235, 235, 235)
_PANEL_HEAD = (170, 170, 170)


def _hsv_bgr(hue: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, sat, val)
    return int(round(b * 255)), int(round(g * 255)), int(round(r * 255))


def color_for(index: int) -> tuple[int, int, int]:
    """A distinct saturated BGR colour for ``index`` (golden-ratio hue steps): person i's
    skeleton, class c's boxes."""
    return _hsv_bgr(index * _GOLDEN, 0.85, 1.0)


def predicate_color(index: int) -> tuple[int, int, int]:
    """The BGR colour of predicate (link class) ``index``: the golden-ratio hues shifted by half
    a turn and lighter, so that it differs from class ``index``'s :func:`color_for`."""
    return _hsv_bgr(0.5 + index * _GOLDEN, 0.6, 1.0)


def part_color(index: int) -> tuple[int, int, int]:
    """The BGR colour of part ``index``'s markers (the palette of :func:`predicate_color`: parts
    and predicates never share a picture)."""
    return predicate_color(index)


@dataclass(frozen=True)
class _Style:
    """Sizes in pixels for a canvas, in proportion to its long side."""

    text_height: int
    font_scale: float
    text_thickness: int
    line: int
    radius: int

    @classmethod
    def of(cls, shape: Sequence[int]) -> _Style:
        side = max(int(shape[0]), int(shape[1]))
        text_h = max(11, int(round(side / 38)))
        text_th = max(1, int(round(text_h / 12)))
        return cls(text_h, cv2.getFontScaleFromHeight(_FONT, text_h, text_th), text_th,
                   max(1, int(round(side / 256))), max(3, int(round(side / 110))))


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected a uint8 BGR array of shape (H, W, 3), got "
                         f"{image.dtype} {image.shape}")
    return np.ascontiguousarray(image).copy()


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label(image: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int],
           style: _Style, placed: list[tuple[int, int, int, int]] | None = None,
           below: bool = False, crowded: str = "draw") -> bool:
    """Text on a filled background so it reads on any picture.

    The caption sits above ``org`` (below it when ``below``), inside the picture. With
    ``placed`` (the rectangles of earlier captions) it moves one caption height down, up, two
    down, … until it covers none of them, and its rectangle is added; where every spot is taken
    it is drawn at the first (``crowded="draw"``) or left out (``"skip"``: the colour and the
    legend still say what it is, and a pile of covered captions says nothing).

    Returns:
        Whether the caption was drawn.
    """
    (w, h), base = cv2.getTextSize(text, _FONT, style.font_scale, style.text_thickness)
    pad = max(1, h // 5)
    bw, bh = w + 2 * pad, h + base + 2 * pad
    img_h, img_w = image.shape[:2]
    x = min(max(org[0], 0), max(img_w - bw, 0))
    y0 = org[1] if below else org[1] - bh

    def clip(y: int) -> int:
        return min(max(y, 0), max(img_h - bh, 0))

    y = clip(y0)
    if placed is not None:
        for k in (0, 1, -1, 2, -2, 3):
            cand = clip(y0 + k * bh)
            if not any(_overlaps((x, cand, x + bw, cand + bh), r) for r in placed):
                y = cand
                break
        else:
            if crowded == "skip":
                return False
        placed.append((x, y, x + bw, y + bh))
    cv2.rectangle(image, (x, y), (x + bw - 1, y + bh - 1), color, -1)
    lum = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    cv2.putText(image, text, (x + pad, y + pad + h), _FONT, style.font_scale,
                (0, 0, 0) if lum > 140 else (255, 255, 255), style.text_thickness, cv2.LINE_AA)
    return True


def draw_people(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None = None,
                skeleton: Sequence[tuple[int, int]] | None = None,
                score_threshold: float = 0.1, show_scores: bool = False,
                part_colors: bool = True) -> np.ndarray:
    """Draw each person's skeleton in its own colour and its parts as markers.

    Args:
        image: BGR uint8 picture.
        keypoints: x, y, score per part in image pixels; parts scoring ≤ ``score_threshold``
            are not drawn.
        scores: per-person score, printed beside the person when ``show_scores``.
        skeleton: 0-based part pairs to join; None: COCO's for 17 parts, else none.
        score_threshold: minimum part score to draw.
        show_scores: write the person score next to its first visible part.
        part_colors: markers in their part's :func:`part_color` with a dark rim (the colours
            of :func:`legend_entries`); False: in the person's colour.

    Shapes:
        image: (H, W, 3), keypoints: (N, C, 3), scores: (N,)
    """
    canvas = _check_image(image)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.size == 0:
        return canvas
    if kp.ndim != 3 or kp.shape[2] != 3:
        raise ValueError(f"keypoints: expected shape (N, C, 3), got {kp.shape}")
    n, c, _ = kp.shape
    if skeleton is None:
        skeleton = COCO_SKELETON if c == 17 else ()
    pairs = np.asarray(skeleton, dtype=np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= c):
        raise ValueError(f"skeleton: part indices must lie in [0, {c}), got {pairs.tolist()}")
    st = _Style.of(canvas.shape)
    visible = kp[..., 2] > score_threshold
    placed: list[tuple[int, int, int, int]] = []
    for i in range(n):  # a few people per picture; OpenCV draws one primitive per call
        color = color_for(i)
        for a, b in pairs[visible[i, pairs[:, 0]] & visible[i, pairs[:, 1]]]:
            cv2.line(canvas, _pt(kp[i, a]), _pt(kp[i, b]), color, st.line + 1, cv2.LINE_AA)
    rim = max(1, st.line // 2)
    for i in range(n):  # markers after every limb, so that no limb hides a part
        for p in np.flatnonzero(visible[i]):
            if part_colors:
                cv2.circle(canvas, _pt(kp[i, p]), st.radius + rim, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(canvas, _pt(kp[i, p]), st.radius,
                       part_color(int(p)) if part_colors else color_for(i), -1, cv2.LINE_AA)
        if show_scores and scores is not None and visible[i].any():
            top = kp[i, visible[i]][np.argmin(kp[i, visible[i], 1])]
            _label(canvas, f"{float(np.asarray(scores)[i]):.2f}",
                   (_pt(top)[0], _pt(top)[1] - st.radius), color_for(i), st, placed)
    return canvas


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray | None = None,
               scores: np.ndarray | None = None, class_names: Sequence[str] | None = None,
               colors: Sequence[tuple[int, int, int]] | None = None,
               placed: list[tuple[int, int, int, int]] | None = None) -> np.ndarray:
    """Draw boxes with "name score" captions (moved where they would cover another, left out
    where no spot near the box is free).

    Args:
        image: BGR uint8 picture.
        boxes: x1, y1, x2, y2 in image pixels.
        labels: class indices (coloured per class unless ``colors`` is given).
        scores: detection scores.
        class_names: names indexed by label (else the label number is written).
        colors: one BGR colour per box.
        placed: caption rectangles already on the picture (extended in place).

    Shapes:
        image: (H, W, 3), boxes: (N, 4), labels: (N,), scores: (N,)
    """
    canvas = _check_image(image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    st = _Style.of(canvas.shape)
    placed = [] if placed is None else placed
    for i, box in enumerate(boxes):
        lab = None if labels is None else int(np.asarray(labels)[i])
        color = colors[i] if colors is not None else color_for(lab if lab is not None else i)
        cv2.rectangle(canvas, _pt(box[:2]), _pt(box[2:]), color, st.line, cv2.LINE_AA)
    for i, box in enumerate(boxes):  # captions after every box, so that no box crosses one
        lab = None if labels is None else int(np.asarray(labels)[i])
        color = colors[i] if colors is not None else color_for(lab if lab is not None else i)
        parts = []
        if lab is not None:
            parts.append(_name(class_names, lab))
        if scores is not None:
            parts.append(f"{float(np.asarray(scores)[i]):.2f}")
        if parts:
            x1, y1 = _pt(box[:2])
            _label(canvas, " ".join(parts), (x1 - st.line // 2, y1 - st.line // 2), color, st,
                   placed, crowded="skip")
    return canvas


def _name(names: Sequence[str] | None, index: int) -> str:
    return names[index] if names is not None and 0 <= index < len(names) else str(index)


def _node_centre(data: dict, score_threshold: float) -> np.ndarray | None:
    if data.get("box") is not None:
        b = np.asarray(data["box"], dtype=np.float64).reshape(4)
        return (b[:2] + b[2:]) / 2
    if data.get("keypoints") is not None:
        kp = np.asarray(data["keypoints"], dtype=np.float64).reshape(-1, 3)
        vis = kp[:, 2] > score_threshold
        return kp[vis, :2].mean(axis=0) if vis.any() else None
    if data.get("x") is not None and data.get("y") is not None:
        return np.array([float(data["x"]), float(data["y"])])
    return None


def draw_graph(image: np.ndarray, graph: nx.Graph, class_names: Sequence[str] | None = None,
               predicate_names: Sequence[str] | None = None,
               skeleton: Sequence[tuple[int, int]] | None = None,
               score_threshold: float = 0.1, edge_labels: bool = True) -> np.ndarray:
    """Draw a relation graph: nodes as boxes and/or skeletons, edges as arrows.

    Nodes use their ``box`` (x1, y1, x2, y2) or ``keypoints`` (C, 3) attribute (else a dot at
    ``x``, ``y``), ``label`` and ``score``; each edge is an arrow from the subject's centre to
    the object's centre in its :func:`predicate_color`, with the predicate name (edge ``label``
    through ``predicate_names``) at its middle when ``edge_labels`` (a legend can say it
    instead: :func:`render_prediction`). Coordinates are image pixels.
    """
    canvas = _check_image(image)
    st = _Style.of(canvas.shape)
    nodes = list(graph.nodes(data=True))
    centres = {n: _node_centre(d, score_threshold) for n, d in nodes}
    placed: list[tuple[int, int, int, int]] = []
    with_kp = [d for _, d in nodes if d.get("keypoints") is not None and d.get("box") is None]
    if with_kp:
        canvas = draw_people(canvas, np.stack([np.asarray(d["keypoints"]) for d in with_kp]),
                             skeleton=skeleton, score_threshold=score_threshold)
    # Arrows under the boxes' captions, so that every caption stays whole.
    tip = 3 * st.radius + 2 * st.line
    edges = list(graph.edges(data=True))
    for u, v, d in edges:  # a few dozen edges per picture
        a, b = centres.get(u), centres.get(v)
        if a is None or b is None:
            continue
        lab = d.get("label")
        color = predicate_color(int(lab)) if lab is not None else (255, 255, 255)
        length = float(np.hypot(*(b - a)))
        cv2.arrowedLine(canvas, _pt(a), _pt(b), color, st.line + 1, cv2.LINE_AA,
                        tipLength=min(0.4, tip / max(length, 1.0)))
    with_box = [(n, d) for n, d in nodes if d.get("box") is not None]
    if with_box:
        canvas = draw_boxes(canvas, np.array([d["box"] for _, d in with_box]),
                            np.array([int(d.get("label", 0)) for _, d in with_box]),
                            np.array([float(d.get("score", 0.0)) for _, d in with_box]),
                            class_names, placed=placed)
    for n, d in nodes:  # objects without a box: a dot and the class name beside it
        if d.get("box") is not None or d.get("keypoints") is not None or centres[n] is None:
            continue
        lab = int(d.get("label", 0))
        x, y = _pt(centres[n])
        cv2.circle(canvas, (x, y), st.radius + 1, color_for(lab), -1, cv2.LINE_AA)
        _label(canvas, _name(class_names, lab), (x + st.radius + 2, y - st.radius),
               color_for(lab), st, placed, crowded="skip")
    if edge_labels:
        for u, v, d in edges:
            a, b = centres.get(u), centres.get(v)
            lab = d.get("label")
            if a is None or b is None or lab is None:
                continue
            _label(canvas, _name(predicate_names, int(lab)), _pt((a + b) / 2),
                   predicate_color(int(lab)), st, placed, below=True, crowded="skip")
    return canvas


# --------------------------------------------------------------------------- legend


@dataclass(frozen=True, order=True)
class LegendEntry:
    """One legend row: a part, an object class or a predicate, its name and colour.

    Attributes:
        kind: "part", "class" or "predicate" (the legend's sections, in this order).
        index: the part / class / predicate index.
        name: the text shown.
    """

    kind: str
    index: int
    name: str

    @property
    def color(self) -> tuple[int, int, int]:
        """The BGR colour the drawings give this part, class or predicate."""
        return color_for(self.index) if self.kind == "class" else predicate_color(self.index)


_KIND_ORDER = {"part": 0, "class": 1, "predicate": 2}
_SECTION = {"part": "parts", "class": "classes", "predicate": "predicates"}


def legend_entries(graphs: nx.Graph | Iterable[nx.Graph],
                   class_names: Sequence[str] | None = None,
                   predicate_names: Sequence[str] | None = None,
                   score_threshold: float = 0.1) -> list[LegendEntry]:
    """The parts, classes and predicates drawn for one graph or several, each once.

    Parts are those above ``score_threshold`` in keypoint nodes (``class_names`` are then the
    part names), classes those of the other nodes, predicates those of the edges. Sorted by
    section (parts, classes, predicates), then index.
    """
    if isinstance(graphs, nx.Graph):
        graphs = [graphs]
    seen: set[tuple[str, int]] = set()
    for g in graphs:
        for _, d in g.nodes(data=True):
            if d.get("keypoints") is not None and d.get("box") is None:
                kp = np.asarray(d["keypoints"], dtype=np.float64).reshape(-1, 3)
                seen.update(("part", int(p)) for p in np.flatnonzero(kp[:, 2] > score_threshold))
            elif d.get("label") is not None:
                seen.add(("class", int(d["label"])))
        for *_, d in g.edges(data=True):
            if d.get("label") is not None:
                seen.add(("predicate", int(d["label"])))
    keys = sorted(seen, key=lambda k: (_KIND_ORDER[k[0]], k[1]))
    return [LegendEntry(kind, i, _name(predicate_names if kind == "predicate" else class_names,
                                       i)) for kind, i in keys]


def _swatch(canvas: np.ndarray, entry: LegendEntry, x: int, yc: int, size: int,
            st: _Style) -> None:
    """The entry's mark as the drawings show it: a rimmed dot, a box, an arrow."""
    c = entry.color
    if entry.kind == "part":
        cv2.circle(canvas, (x + size // 2, yc), size // 2, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(canvas, (x + size // 2, yc), max(2, size // 2 - max(1, st.line // 2)), c, -1,
                   cv2.LINE_AA)
    elif entry.kind == "class":
        half = size // 2
        cv2.rectangle(canvas, (x, yc - half), (x + size, yc + half), c, -1)
    else:
        cv2.arrowedLine(canvas, (x, yc), (x + 2 * size, yc), c, st.line + 1, cv2.LINE_AA,
                        tipLength=0.4)


def draw_legend(image: np.ndarray, entries: Sequence[LegendEntry],
                width: int | None = None, side: int | None = None) -> np.ndarray:
    """The picture with a legend panel on its right: one row per entry, by section.

    The panel is as tall as the picture and, unless ``width`` fixes it (a video keeps one
    frame size), as wide as its longest row; text and marks are sized for a picture whose long
    side is ``side`` (default: this picture's). Rows that do not fit end in "+N more"; no
    entry reads "nothing detected".

    Shapes:
        image: (H, W, 3) -> (H, W + panel width, 3)
    """
    canvas = _check_image(image)
    h = canvas.shape[0]
    st = _Style.of(canvas.shape if side is None else (side, side))
    row = int(round(1.7 * st.text_height))
    pad = max(4, st.text_height // 2)
    swatch = st.text_height + 2
    rows: list[tuple[str, LegendEntry | None]] = []
    kind = None
    for e in entries:
        if e.kind != kind:
            rows.append((_SECTION[e.kind], None))
            kind = e.kind
        rows.append((e.name, e))
    if not rows:
        rows = [("nothing detected", None)]
    fit = max(1, (h - 2 * pad) // row)
    if len(rows) > fit:
        rest = sum(e is not None for _, e in rows[fit - 1:])
        rows = rows[:fit - 1] + [(f"+{rest} more", None)]

    def text_w(text: str) -> int:
        return cv2.getTextSize(text, _FONT, st.font_scale, st.text_thickness)[0][0]

    indent = 2 * swatch + 2 * pad  # arrows are two swatches long
    need = max(text_w(t) + (indent if e is not None else 0) for t, e in rows) + 2 * pad
    panel = np.empty((h, need if width is None else int(width), 3), np.uint8)
    panel[:] = _PANEL
    for k, (text, e) in enumerate(rows):
        yc = pad + k * row + row // 2
        base = yc + st.text_height // 2
        if e is None:
            cv2.putText(panel, text, (pad, base), _FONT, st.font_scale, _PANEL_HEAD,
                        st.text_thickness, cv2.LINE_AA)
        else:
            _swatch(panel, e, pad, yc, swatch, st)
            cv2.putText(panel, text, (pad + indent, base), _FONT, st.font_scale, _PANEL_TEXT,
                        st.text_thickness, cv2.LINE_AA)
    return np.concatenate([canvas, panel], axis=1)


# --------------------------------------------------------------------------- whole drawings


def upscale(image: np.ndarray, min_side: int = MIN_DRAWING_SIDE
            ) -> tuple[np.ndarray, float, float]:
    """The picture enlarged (bilinear) so that its long side is at least ``min_side``.

    Returns:
        The picture (a copy) and the factors ``fx``, ``fy`` of width and height: a point x, y
        of the picture is ``(x + 0.5) · fx − 0.5``, ``(y + 0.5) · fy − 0.5`` on it (pixel
        centres, docs/design.md §7).
    """
    canvas = _check_image(image)
    h, w = canvas.shape[:2]
    if max(h, w) >= min_side:
        return canvas, 1.0, 1.0
    f = min_side / max(h, w)
    nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
    return cv2.resize(canvas, (nw, nh), interpolation=cv2.INTER_LINEAR), nw / w, nh / h


def _scaled_graph(graph: nx.Graph, fx: float, fy: float) -> nx.Graph:
    """A copy of ``graph`` with its image coordinates on a picture enlarged by fx, fy."""
    g = graph.copy()
    if fx == fy == 1.0:
        return g
    f = np.array([fx, fy])

    def xy(p: np.ndarray) -> np.ndarray:
        return (p + 0.5) * f - 0.5

    for _, d in g.nodes(data=True):
        if d.get("box") is not None:
            d["box"] = xy(np.asarray(d["box"], np.float64).reshape(2, 2)).reshape(4)
        if d.get("keypoints") is not None:
            kp = np.array(d["keypoints"], np.float64).reshape(-1, 3)
            kp[:, :2] = xy(kp[:, :2])
            d["keypoints"] = kp
    for attrs in [d for _, d in g.nodes(data=True)] + [d for *_, d in g.edges(data=True)]:
        if attrs.get("x") is not None and attrs.get("y") is not None:
            attrs["x"], attrs["y"] = (float(v) for v in xy(np.array([attrs["x"], attrs["y"]],
                                                                     np.float64)))
    return g


def render_prediction(image: np.ndarray, graph: nx.Graph,
                      class_names: Sequence[str] | None = None,
                      predicate_names: Sequence[str] | None = None, *,
                      skeleton: Sequence[tuple[int, int]] | None = None,
                      score_threshold: float = 0.1, min_side: int = MIN_DRAWING_SIDE,
                      legend: bool | Sequence[LegendEntry] = True,
                      legend_width: int | None = None) -> np.ndarray:
    """A prediction drawn to be read: enlarged picture, graph, legend.

    The picture is enlarged to ``min_side`` on its long side when smaller (:func:`upscale`) and
    the graph (image pixels) drawn on it with :func:`draw_graph`; predicate names are left to
    the legend rather than written on the arrows, where they covered each other.

    Args:
        image: BGR uint8 picture the graph's coordinates refer to.
        graph: a prediction's graph (``Prediction.graph``).
        class_names: part names (pose) or object class names.
        predicate_names: link class names.
        skeleton: part pairs to join (pose).
        score_threshold: minimum part score to draw.
        min_side: the long side the picture is enlarged to at least.
        legend: True: a panel with the entries of this graph (:func:`legend_entries`); a list
            of entries: those (e.g. fixed for a video); False: none.
        legend_width: fixed panel width (default: as wide as its rows).

    Shapes:
        image: (H, W, 3) -> (H', W' + panel width, 3) with max(H', W') >= min_side
    """
    canvas, fx, fy = upscale(image, min_side)
    canvas = draw_graph(canvas, _scaled_graph(graph, fx, fy), class_names, predicate_names,
                        skeleton=skeleton, score_threshold=score_threshold, edge_labels=False)
    if legend is False:
        return canvas
    entries = legend_entries(graph, class_names, predicate_names, score_threshold) \
        if legend is True else list(legend)
    return draw_legend(canvas, entries, legend_width)


def overview_sheet(tiles: Sequence[np.ndarray], columns: int = 4, tile_size: int = 384,
                   captions: Sequence[str] | None = None,
                   legend: Sequence[LegendEntry] | None = None) -> np.ndarray:
    """Pictures on a grid of ``columns`` columns, each fitted into a ``tile_size`` square.

    Tile k sits in row ``k // columns``, column ``k % columns``. A cell is the ``tile_size``
    square, below a caption band of :func:`overview_band` pixels when ``captions`` are given
    (``captions[k]`` is written there, not over the picture; one too wide for the cell loses
    its start to "..."), with a gap of
    ``max(2, tile_size // 64)`` pixels around every cell. Tiles keep their aspect (centred,
    long side = ``tile_size``). With ``legend`` a :func:`draw_legend` panel for the whole
    sheet is added on the right, its text sized for a picture twice the tile.

    Shapes:
        tiles: K × (H_k, W_k, 3) -> (rows · (band + T + gap) + gap,
        columns · (T + gap) + gap [+ legend width], 3), rows = ceil(K / columns),
        columns = min(columns, K)

    Raises:
        ValueError: no tile, ``columns`` or ``tile_size`` below 1, or captions not one per
            tile.
    """
    if not tiles:
        raise ValueError("tiles: expected at least one picture for the overview")
    if columns < 1 or tile_size < 1:
        raise ValueError(f"columns, tile_size: expected >= 1, got {columns}, {tile_size}")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"captions: expected {len(tiles)} (one per tile), got {len(captions)}")
    gap = max(2, tile_size // 64)
    band = 0 if captions is None else overview_band(tile_size)
    cols = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    cell_h = band + tile_size
    sheet = np.empty((rows * (cell_h + gap) + gap, cols * (tile_size + gap) + gap, 3), np.uint8)
    sheet[:] = _PANEL
    st = _Style.of((tile_size, tile_size))
    for k, tile in enumerate(tiles):
        tile = _check_image(tile)
        th, tw = tile.shape[:2]
        f = tile_size / max(th, tw)
        nw = max(1, min(tile_size, int(round(tw * f))))
        nh = max(1, min(tile_size, int(round(th * f))))
        if (nw, nh) != (tw, th):
            tile = cv2.resize(tile, (nw, nh), interpolation=cv2.INTER_AREA if f < 1
                              else cv2.INTER_LINEAR)
        y0 = gap + (k // cols) * (cell_h + gap)
        x0 = gap + (k % cols) * (tile_size + gap)
        oy, ox = band + (tile_size - nh) // 2, (tile_size - nw) // 2
        sheet[y0 + oy:y0 + oy + nh, x0 + ox:x0 + ox + nw] = tile
        if captions is not None:
            text = _fit(captions[k], tile_size, st)
            cv2.putText(sheet, text, (x0, y0 + (band + st.text_height) // 2), _FONT,
                        st.font_scale, _PANEL_TEXT, st.text_thickness, cv2.LINE_AA)
    if legend is None:
        return sheet
    return draw_legend(sheet, legend, side=2 * tile_size)


def _fit(text: str, width: int, st: _Style) -> str:
    """``text``, its start cut to "..." until it is at most ``width`` pixels wide (the end of a
    file name tells pictures apart)."""
    cut = text
    while len(cut) > 1 and cv2.getTextSize(cut, _FONT, st.font_scale,
                                           st.text_thickness)[0][0] > width:
        text = text[1:]
        cut = "..." + text
    return cut


def overview_band(tile_size: int) -> int:
    """The height of the caption band above each tile of :func:`overview_sheet`."""
    return int(round(1.6 * _Style.of((tile_size, tile_size)).text_height))


def save_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 95) -> Path:
    """Write a BGR picture as PNG or JPEG (by extension), atomically.

    Raises:
        ValueError: the extension is not .png, .jpg or .jpeg, or encoding fails.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"{path}: expected a .png, .jpg or .jpeg file name")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext != ".png" else []
    ok, buf = cv2.imencode(ext, _check_image(image), params)
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode the image")
    return atomic_write(path, lambda f: f.write(buf.tobytes()))
