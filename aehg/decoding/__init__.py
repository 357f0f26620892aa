"""Decoding maps into instances and graphs (docs/design.md §4).

* :mod:`aehg.decoding.peaks`: input checks, NMS peaks, top-k, gathers, sub-pixel positions —
  the layer every decoder shares;
* :mod:`aehg.decoding.instances`: :class:`Instances`;
* :mod:`aehg.decoding.grouping`: :func:`group` (people: multi-part instances by tag,
  confidence and layout);
* :mod:`aehg.decoding.prior`: :class:`PosePrior` (the spatial layout of a person);
* :mod:`aehg.decoding.objects`: :func:`decode_objects` (objects: one peak, one instance);
* :mod:`aehg.decoding.graph`: :func:`build_graph` (instances linked into a
  ``networkx.MultiDiGraph``).
"""

from __future__ import annotations

from aehg.decoding.graph import build_graph
from aehg.decoding.grouping import METHODS, TIE_BREAK, group
from aehg.decoding.instances import Instances
from aehg.decoding.objects import decode_objects
from aehg.decoding.prior import PosePrior
from aehg.decoding.single import decode_single as decode_single  # one person per image
from aehg.keypoints import COCO_PART_ORDER

__all__ = ["COCO_PART_ORDER", "METHODS", "TIE_BREAK", "Instances", "PosePrior", "build_graph",
           "decode_objects", "group"]
