"""Known objects as input channels: the box maps of ``data.task`` sgcls / predcls
(docs/design.md §2 "Tasks").

One renderer, :func:`render_box_channels`, serves the dataset (training and evaluation, from the
boxes after augmentation) and inference (:func:`aehg.inference.preprocess`), so both feed the
network the same maps. :func:`check_known_objects` checks the objects a user gives.

Example:
    >>> ch = render_box_channels(np.array([[10, 20, 40, 60]]), (128, 128), sigma=4.0)
    >>> ch.shape                                   # interior mask, centre heatmap
    (2, 128, 128)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aehg.config import task_box_channels
from aehg.data.targets import gaussian_patch, gaussian_radius

__all__ = ["box_channel_sigma", "check_known_objects", "render_box_channels"]


def box_channel_sigma(sigma: float, input_size: int, output_size: int) -> float:
    """σ of the centre heatmap in input pixels: the targets' ``data.sigma`` (output pixels)
    times the stride, so the input Gaussian covers what the target Gaussian covers."""
    return float(sigma) * (int(input_size) // int(output_size))


def render_box_channels(boxes: np.ndarray, size: tuple[int, int], *, sigma: float,
                        labels: np.ndarray | None = None, num_classes: int = 0) -> np.ndarray:
    """The box input channels of known objects at network-input resolution.

    Channel 0 is the **interior mask**: 1 on the pixels of any box, the columns
    ``round(x1) … round(x2)`` and rows ``round(y1) … round(y2)`` (half-up rounding, inclusive,
    so every box has at least its centre pixel). Channel 1 is the **centre heatmap**: a
    Gaussian ``exp(−(dx² + dy²)/(2σ²))`` with peak 1 at each box's rounded centre, drawn on
    ``gaussian_radius(σ)`` patches and max-combined (like the targets' heatmaps, docs/design.md
    §3). With ``num_classes`` > 0 (predcls), channels 2 … 2 + C − 1 are the **class masks**:
    channel 2 + c is the interior mask of the boxes of class c. Boxes are first clipped to the
    input, ``[−0.5, W − 0.5] × [−0.5, H − 0.5]`` (the centre is that of the clipped box, as in
    the targets); a box wholly outside is not drawn.

    Args:
        boxes: x1, y1, x2, y2 in input pixels (pixel centres are integers, docs/design.md §7).
        size: (H_in, W_in).
        sigma: centre Gaussian σ in input pixels (:func:`box_channel_sigma`).
        labels: class of each box, needed when ``num_classes`` > 0.
        num_classes: C for predcls; 0 for sgcls (no class masks).

    Returns:
        float32 values in [0, 1].

    Raises:
        ValueError: wrong shapes, non-finite boxes, a non-positive σ, labels missing or outside
            ``0 … num_classes − 1``.

    Shapes:
        boxes: (N, 4), labels: (N,) -> (2 + num_classes, H_in, W_in)
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4) x1, y1, x2, y2, got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes: expected finite coordinates, got NaN or infinity")
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size: expected (H, W) >= 1, got {size}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive value, got {sigma}")
    num_classes = int(num_classes)
    k = 2 + num_classes
    lab = np.zeros(len(boxes), np.int64)
    if num_classes > 0:
        if labels is None:
            raise ValueError(f"labels: the class masks ({num_classes} classes) need the class "
                             f"of every box")
        lab = np.asarray(labels)
        if lab.shape != (len(boxes),) or (lab.size and not np.issubdtype(lab.dtype, np.integer)):
            raise ValueError(f"labels: expected ({len(boxes)},) integer classes, got "
                             f"{lab.dtype} {lab.shape}")
        lab = lab.astype(np.int64)
        bad = np.nonzero((lab < 0) | (lab >= num_classes))[0]
        if bad.size:
            raise ValueError(f"labels[{bad[0]}]: expected a class in 0..{num_classes - 1}, got "
                             f"{lab[bad[0]]}")
    out = np.zeros((k, h, w), np.float32)
    lo = np.array([-0.5, -0.5]), np.array([w - 0.5, h - 0.5])
    inside = ((boxes[:, 2] >= lo[0][0]) & (boxes[:, 0] <= lo[1][0])
              & (boxes[:, 3] >= lo[0][1]) & (boxes[:, 1] <= lo[1][1]))
    b, lab = boxes[inside], lab[inside]
    if len(b) == 0:
        return out
    b = np.concatenate([np.clip(b[:, :2], *lo), np.clip(b[:, 2:], *lo)], axis=1)
    # Interior: a 2-D difference array (+1/−1 at the corners) summed along both axes counts
    # the boxes over every pixel, for all boxes and classes at once.
    r = np.floor(b + 0.5).astype(np.int64)
    x1, x2 = np.clip(r[:, 0], 0, w - 1), np.clip(r[:, 2], 0, w - 1)
    y1, y2 = np.clip(r[:, 1], 0, h - 1), np.clip(r[:, 3], 0, h - 1)
    x1, x2 = np.minimum(x1, x2), np.maximum(x1, x2)
    y1, y2 = np.minimum(y1, y2), np.maximum(y1, y2)
    # Only the classes present get a plane (C = 150 planes at 512² would cost ~20× more).
    present, member = np.unique(lab, return_inverse=True)
    chan = np.zeros(len(b), np.int64)                            # plane 0: all boxes
    if num_classes > 0:  # every box also in its class's plane 1 + k
        chan = np.concatenate([chan, 1 + member.reshape(-1)])
        x1, x2, y1, y2 = (np.tile(v, 2) for v in (x1, x2, y1, y2))
    planes = 1 + (len(present) if num_classes > 0 else 0)
    diff = np.zeros((planes, h + 1, w + 1), np.int32)
    for ys, xs, sign in ((y1, x1, 1), (y1, x2 + 1, -1), (y2 + 1, x1, -1), (y2 + 1, x2 + 1, 1)):
        np.add.at(diff, (chan, ys, xs), sign)
    covered = diff.cumsum(axis=1).cumsum(axis=2)[:, :h, :w] > 0
    out[0] = covered[0]
    if num_classes > 0:
        out[2 + present] = covered[1:]
    # Centre heatmap: Gaussian patches at the rounded centres, max-combined.
    cx = np.floor((b[:, 0] + b[:, 2]) / 2.0 + 0.5).astype(np.int64)
    cy = np.floor((b[:, 1] + b[:, 3]) / 2.0 + 0.5).astype(np.int64)
    rad = gaussian_radius(sigma)
    off = np.arange(-rad, rad + 1)
    gx = cx[:, None, None] + off[None, None, :]                  # (N, 1, S)
    gy = cy[:, None, None] + off[None, :, None]                  # (N, S, 1)
    ok = (gx >= 0) & (gx < w) & (gy >= 0) & (gy < h)             # (N, S, S)
    values = np.broadcast_to(gaussian_patch(sigma), ok.shape)
    centre = out[1].reshape(-1)
    np.maximum.at(centre, (np.broadcast_to(gy, ok.shape) * w
                           + np.broadcast_to(gx, ok.shape))[ok], values[ok])
    return out


def check_known_objects(boxes: Sequence[Sequence[float]] | np.ndarray | None,
                        labels: Sequence[int] | np.ndarray | None, image_size: tuple[int, int],
                        task: str, num_classes: int, where: str = ""
                        ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Check the known objects given for one picture against the model's task.

    Args:
        boxes: x1, y1, x2, y2 in image pixels, inside the image (``0 ≤ x1 ≤ x2 ≤ w``,
            ``0 ≤ y1 ≤ y2 ≤ h``); needed for sgcls and predcls, refused for sgdet.
        labels: class per box, needed for predcls (``0 … num_classes − 1``); ignored for sgcls.
        image_size: (h, w) of the picture.
        task: the model's ``data.task``.
        num_classes: the model's object classes.
        where: a prefix for the messages (e.g. ``"images[2]: "``).

    Returns:
        ``(boxes (N, 4) float64, labels (N,) int64 or None)``; ``(None, None)`` for sgdet.

    Raises:
        ValueError: boxes missing for sgcls/predcls or given to an sgdet model, an empty box
            list, a wrong shape, a box outside the image or with x2 < x1 / y2 < y1, labels
            missing (predcls), of another length or outside the classes.
    """
    task_box_channels(task, num_classes)  # an unknown task is an error naming data.task
    if task == "sgdet":
        if boxes is not None or labels is not None:
            raise ValueError(f"{where}boxes: the model's data.task is 'sgdet' (no box input "
                             f"channels: it finds the objects itself); known boxes need a model "
                             f"trained with data.task sgcls or predcls")
        return None, None
    if boxes is None:
        raise ValueError(f"{where}boxes: the model's data.task is {task!r}: give the known "
                         f"objects, boxes=(N, 4) x1, y1, x2, y2 in image pixels"
                         + (" and labels=(N,) classes" if task == "predcls" else ""))
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        raise ValueError(f"{where}boxes: expected at least one box (data.task {task!r} decodes "
                         f"the relations between the given objects), got an empty list")
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{where}boxes: expected shape (N, 4) x1, y1, x2, y2, got {b.shape}")
    h, w = (int(v) for v in image_size)
    finite = np.isfinite(b).all(axis=1)
    ordered = (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])
    inside = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= w) & (b[:, 3] <= h)
    for ok, what in ((finite, "finite coordinates"), (ordered, "x1 <= x2 and y1 <= y2"),
                     (inside, f"a box inside the image (0 <= x <= {w}, 0 <= y <= {h}); "
                              f"the box lies outside the image")):
        bad = np.nonzero(~ok)[0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{where}boxes[{i}]: expected {what}, got "
                             f"{[round(float(v), 2) for v in b[i]]}")
    if task == "sgcls":
        return b, None
    if labels is None:
        raise ValueError(f"{where}labels: the model's data.task is 'predcls': give the class "
                         f"of every box, labels=(N,) in 0..{num_classes - 1}")
    lab = np.asarray(labels)
    if lab.shape != (len(b),) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{where}labels: expected {len(b)} integer classes (one per box), got "
                         f"{lab.dtype} {lab.shape}")
    bad = np.nonzero((lab < 0) | (lab >= num_classes))[0]
    if bad.size:
        raise ValueError(f"{where}labels[{bad[0]}]: expected a class in 0..{num_classes - 1} "
                         f"(model.num_classes {num_classes}), got {lab[bad[0]]}")
    return b, lab.astype(np.int64)
