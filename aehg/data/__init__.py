"""Datasets, targets and loaders: COCO keypoints, relation (scene-graph) data, the Visual Genome
and Scene-Graph-Benchmark h5 converters, synthetic datasets written as real files, and the
collate/loader helpers."""

from __future__ import annotations

from aehg.data.coco import (
    COCO_FLIP_MAP,
    COCO_OKS_SIGMAS,
    CocoKeypointDataset,
    DataFormatError,
    UnreadableImageError,
    derive_flip_map,
    load_coco_json,
)
from aehg.data.info import DataInfo, base_dataset, data_info, dataset_image_ids, resolve_flip_map
from aehg.data.loader import (
    build_dataloader,
    build_dataset,
    collate,
    seed_worker,
    worker_init_fn,
)
from aehg.data.mpii import (
    MPII_FLIP_MAP,
    MPII_JOINT_NAMES,
    MPII_SKELETON,
    MpiiAnnotations,
    MpiiDataset,
    load_mpii,
)
from aehg.data.relations import RelationDataset
from aehg.data.sgb import (
    convert_sgb,
    load_sgb,
    load_train_triplets,
    training_triplets,
    write_train_triplets,
)
from aehg.data.synthetic import SyntheticPaths, ensure_synthetic
from aehg.data.targets import TargetStats, build_targets
from aehg.data.transforms import AffineParams, affine_matrix, apply_affine, invert_affine
from aehg.data.visual_genome import convert_visual_genome, split_relation_data

__all__ = [
    "COCO_FLIP_MAP",
    "COCO_OKS_SIGMAS",
    "MPII_FLIP_MAP",
    "MPII_JOINT_NAMES",
    "MPII_SKELETON",
    "AffineParams",
    "CocoKeypointDataset",
    "DataInfo",
    "DataFormatError",
    "MpiiAnnotations",
    "MpiiDataset",
    "RelationDataset",
    "SyntheticPaths",
    "TargetStats",
    "UnreadableImageError",
    "affine_matrix",
    "apply_affine",
    "base_dataset",
    "build_dataloader",
    "build_dataset",
    "build_targets",
    "collate",
    "convert_sgb",
    "convert_visual_genome",
    "data_info",
    "dataset_image_ids",
    "derive_flip_map",
    "ensure_synthetic",
    "invert_affine",
    "load_coco_json",
    "load_mpii",
    "load_sgb",
    "load_train_triplets",
    "resolve_flip_map",
    "seed_worker",
    "split_relation_data",
    "training_triplets",
    "worker_init_fn",
    "write_train_triplets",
]
