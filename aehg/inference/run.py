"""The inference job behind ``tools/infer.py``: pictures in, drawings and graph files out
(docs/design.md §8)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from aehg.export import graphs_to_relation_results, write_graphml, write_node_link
from aehg.inference.decode import Prediction
from aehg.inference.io import ImageReadError, read_image
from aehg.inference.predictor import Predictor
from aehg.io import write_json
from aehg.visualize import draw_graph, save_image

__all__ = ["run_inference"]

log = logging.getLogger(__name__)


def run_inference(predictor: Predictor, inputs: Sequence[str | os.PathLike[str]],
                  output_dir: str | os.PathLike[str], *, fmt: str = "json",
                  skip_unreadable: bool = False, progress: bool = True) -> list[Prediction]:
    """Predict pictures and write, per picture, a drawing and a graph file.

    For ``photo.jpg`` this writes ``photo.jpg`` (the drawing; PNG for other inputs) and
    ``photo.json`` (networkx node-link) or ``photo.graphml``, plus ``results.json`` (the
    relation-results JSON of all pictures; image ids are the pictures' positions in
    ``inputs``).

    Raises:
        ImageReadError: a picture is missing or unreadable (unless ``skip_unreadable``: then it
            is logged and left out).
    """
    if fmt not in ("json", "graphml"):
        raise ValueError(f"fmt: expected 'json' or 'graphml', got {fmt!r}")
    out_dir = Path(output_dir)
    paths = [Path(p) for p in inputs]
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ValueError("inputs: two pictures share a file stem; their outputs would collide")
    for p in paths:
        if out_dir.resolve() == p.resolve().parent:
            raise ValueError(f"output folder {out_dir} is the folder of the input {p}; the "
                             f"drawings would overwrite the pictures, choose another folder")
    info = predictor.info
    preds: list[Prediction] = []
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
            drawing = draw_graph(image, pred.graph, info.class_names, info.predicate_names,
                                 skeleton=info.skeleton,
                                 score_threshold=predictor.cfg.eval.detection_threshold)
            suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            save_image(out_dir / f"{path.stem}{suffix}", drawing)
            if fmt == "json":
                write_node_link(out_dir / f"{path.stem}.json", pred.graph)
            else:
                write_graphml(out_dir / f"{path.stem}.graphml", pred.graph)
            preds.append(pred)
        bar.update(len(paths[start:start + predictor.batch_size]))
    bar.close()
    results = graphs_to_relation_results([p.graph for p in preds], info.categories,
                                         info.predicate_categories)
    write_json(out_dir / "results.json", results)
    return preds
