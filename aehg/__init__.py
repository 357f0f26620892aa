"""aehg: associative embedding on stacked hourglass networks.

One network detects parts or objects as heatmaps, tags each detection with an embedding,
groups detections into instances by their embeddings and links instances into a relation
graph.
"""

from __future__ import annotations

from aehg.config import Config, ConfigError, load_config, save_config
from aehg.decoding import Instances, build_graph, decode_objects, group
from aehg.models import StackedHourglass, build_model

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "Instances",
    "StackedHourglass",
    "build_graph",
    "build_model",
    "decode_objects",
    "group",
    "load_config",
    "save_config",
]
