"""The inference job behind ``tools/infer.py``: pictures in, drawings and graph files out
(docs/design.md §8)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from aehg.export import (
    graphs_to_relation_results,
    write_graphml,
    write_node_link,
    write_sgb_custom_prediction,
)
from aehg.inference.decode import Prediction
from aehg.inference.io import ImageReadError, read_image
from aehg.inference.predictor import Predictor
from aehg.io import write_json
from aehg.visualize import legend_entries, overview_sheet, render_prediction, save_image

__all__ = ["DRAWINGS_DIR", "GRAPHS_DIR", "OVERVIEW_FILE", "OVERVIEW_TILE", "RESULTS_FILE",
           "draw_prediction", "run_inference"]

log = logging.getLogger(__name__)

# The output layout. Per-picture files live in their own sub-folders, so no picture name can
# take the name of the combined file (an input ``results.jpg`` once had its graph replaced by it).
DRAWINGS_DIR = "drawings"
GRAPHS_DIR = "graphs"
RESULTS_FILE = "results.json"
OVERVIEW_FILE = "overview.png"
OVERVIEW_TILE = 384  # px per overview tile: 16 tiles make a sheet about 1.6k px square


def draw_prediction(predictor: Predictor, image: np.ndarray, pred: Prediction, **kwargs: Any
                    ) -> np.ndarray:
    """``pred`` drawn on its picture to be read (:func:`aehg.visualize.render_prediction`):
    enlarged to at least 512 px, the predictor's part / class / predicate names, skeleton and
    detection threshold, a legend; ``kwargs`` go to ``render_prediction``.

    Shapes:
        image: (H, W, 3) BGR uint8, the picture ``pred`` was predicted on
    """
    info = predictor.info
    return render_prediction(image, pred.graph, info.class_names, info.predicate_names,
                             skeleton=info.skeleton,
                             score_threshold=predictor.cfg.eval.detection_threshold, **kwargs)


def run_inference(predictor: Predictor, inputs: Sequence[str | os.PathLike[str]],
                  output_dir: str | os.PathLike[str], *, fmt: str = "json",
                  skip_unreadable: bool = False, progress: bool = True,
                  overview: int = 16) -> list[Prediction]:
    """Predict pictures and write, per picture, a drawing and a graph file.

    The output folder gets::

        output_dir/results.json            relation-results JSON of all pictures (image ids are
                                           the pictures' positions in ``inputs``)
        output_dir/custom_prediction.json  relation models only: Scene-Graph-Benchmark's pair
        output_dir/custom_data_info.json   (image index i = the i-th picture predicted,
                                           ``idx_to_files[i]`` its path; docs/design.md §5)
        output_dir/drawings/photo.jpg      the drawing (same suffix for .jpg/.jpeg, else .png):
                                           at least 512 px on the long side, with a legend
                                           (:func:`draw_prediction`)
        output_dir/graphs/photo.json       networkx node-link JSON (or photo.graphml)
        output_dir/overview.png            when two or more pictures are predicted: the first
                                           ``overview`` of them (0: none) on a 4-column grid
                                           with their names and one legend

    Per-picture files go to sub-folders so that no input name can collide with the combined
    file (a picture called ``results.jpg`` gets ``graphs/results.json``). Two inputs whose stems
    differ only by case (``A.jpg``, ``a.png``) are refused like equal stems (``a.jpg``,
    ``a.png``): on a case-insensitive file system their outputs would be one file.

    Raises:
        ValueError: two inputs share a stem (case ignored), or the output folder or one of
            its sub-folders holds an input (the outputs could overwrite the pictures).
        ImageReadError: a picture is missing, undecodable or truncated (unless
            ``skip_unreadable``: then it is logged and left out).
    """
    if fmt not in ("json", "graphml"):
        raise ValueError(f"fmt: expected 'json' or 'graphml', got {fmt!r}")
    out_dir = Path(output_dir)
    drawings_dir, graphs_dir = out_dir / DRAWINGS_DIR, out_dir / GRAPHS_DIR
    paths = [Path(p) for p in inputs]
    first: dict[str, Path] = {}
    for p in paths:
        other = first.setdefault(p.stem.casefold(), p)
        if other is not p:
            raise ValueError(f"inputs {other} and {p}: same file stem (case ignored); their "
                             f"drawings and graph files would collide, rename one")
    written = {d.resolve() for d in (out_dir, drawings_dir, graphs_dir)}
    for p in paths:
        if p.resolve().parent in written:
            raise ValueError(f"output folder {out_dir} holds the input {p}; the outputs could "
                             f"overwrite the pictures, choose another folder")
    if overview < 0:
        raise ValueError(f"overview: expected the number of pictures (>= 0), got {overview}")
    info = predictor.info
    preds: list[Prediction] = []
    predicted: list[Path] = []  # the picture of each prediction
    tiles: list[np.ndarray] = []  # the overview's first pictures, drawn at tile size
    bar = tqdm(total=len(paths), desc="infer", unit="img", disable=not progress)
    for start in range(0, len(paths), predictor.batch_size):
        chunk, images, ids = [], [], []
        for i, p in enumerate(paths[start:start + predictor.batch_size], start=start):
            try:
                images.append(read_image(p))
            except ImageReadError as exc:
                if not skip_unreadable:
                    raise
                log.warning("skipping %s", exc)
                continue
            chunk.append(p)
            ids.append(i)
        for path, image, pred in zip(chunk, images, predictor.predict_batch(images, ids),
                                     strict=True):
            pred.file_name = path.name
            pred.graph.graph["file_name"] = path.name
            drawing = draw_prediction(predictor, image, pred)
            if len(tiles) < overview:
                # Drawn at the tile size, not shrunk from the drawing: text stays legible.
                tiles.append(draw_prediction(predictor, image, pred, min_side=OVERVIEW_TILE,
                                             legend=False))
            suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            save_image(drawings_dir / f"{path.stem}{suffix}", drawing)
            if fmt == "json":
                write_node_link(graphs_dir / f"{path.stem}.json", pred.graph)
            else:
                write_graphml(graphs_dir / f"{path.stem}.graphml", pred.graph)
            preds.append(pred)
            predicted.append(path)
        bar.update(len(paths[start:start + predictor.batch_size]))
    bar.close()
    if len(tiles) > 1:
        shown = preds[:len(tiles)]
        sheet = overview_sheet(tiles, columns=4, tile_size=OVERVIEW_TILE,
                               captions=[p.name for p in predicted[:len(tiles)]],
                               legend=legend_entries([p.graph for p in shown], info.class_names,
                                                     info.predicate_names,
                                                     predictor.cfg.eval.detection_threshold))
        save_image(out_dir / OVERVIEW_FILE, sheet)
    results = graphs_to_relation_results([p.graph for p in preds], info.categories,
                                         info.predicate_categories)
    write_json(out_dir / RESULTS_FILE, results)
    cfg = predictor.cfg
    if cfg.data.kind == "relations":
        # Without names (no data files at hand) the class indices stand in for them.
        classes = info.class_names or [str(c) for c in range(cfg.model.num_classes)]
        predicates = info.predicate_names or [str(r) for r in range(cfg.model.num_link_classes)]
        write_sgb_custom_prediction([p.graph for p in preds], classes, predicates, out_dir,
                                    predicted, triplet_score=cfg.eval.triplet_score,
                                    link_class_heat=[p.link_class_heat for p in preds])
    return preds
