"""Decoding maps into instances and graphs (docs/design.md §4).

* :mod:`aehg.decoding.peaks`: input checks, NMS peaks, top-k, gathers, sub-pixel positions —
  the layer every decoder shares;
* :mod:`aehg.decoding.instances`: :class:`Instances`;
* :mod:`aehg.decoding.grouping`: :func:`group` (people: multi-part instances by tag);
* :mod:`aehg.decoding.objects`: :func:`decode_objects` (objects: one peak, one instance);
* :mod:`aehg.decoding.graph`: :func:`build_graph` (instances linked into a
  ``networkx.MultiDiGraph``).
"""

from __future__ import annotations

from aehg.decoding.graph import build_graph
from aehg.decoding.grouping import TIE_BREAK, group
from aehg.decoding.instances import Instances
from aehg.decoding.objects import decode_objects
from aehg.keypoints import COCO_PART_ORDER

__all__ = ["COCO_PART_ORDER", "TIE_BREAK", "Instances", "build_graph", "decode_objects", "group"]
