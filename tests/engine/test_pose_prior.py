"""eval.pose_prior: train — training fits the grouping prior on its annotations and every
consumer of the run (validation, saved config, checkpoints, Predictor, evaluate_checkpoint)
groups with it (docs/design.md §4)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aehg.checkpoint import load_checkpoint
from aehg.config import load_config
from aehg.decoding.prior import PosePrior
from aehg.engine import train
from aehg.evaluation import evaluate_checkpoint
from aehg.inference import Predictor, resolve_pose_prior


def _naive_pair_mean(annotation_file: Path, p: int, q: int) -> float:
    """Mean of log(|x_p - x_q| / sqrt(area)) over the people labelling both parts."""
    values = []
    for ann in json.loads(annotation_file.read_text())["annotations"]:
        kp = ann["keypoints"]
        if ann.get("iscrowd", 0) or kp[3 * p + 2] <= 0 or kp[3 * q + 2] <= 0:
            continue
        d = math.hypot(kp[3 * p] - kp[3 * q], kp[3 * p + 1] - kp[3 * q + 1])
        values.append(math.log(max(d / math.sqrt(ann["area"]), 0.01)))
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config):
    out = tmp_path_factory.mktemp("prior") / "run"
    cfg = tiny_config(out, "eval.pose_prior=train", "eval.spatial_weight=0.5",
                      "train.max_steps=2")
    assert cfg.eval.fitted_prior is None
    train(copy.deepcopy(cfg))  # training records the fit in the config it is given
    return cfg, out


def test_training_fits_the_prior_on_its_annotations_and_stores_it(trained):
    cfg, out = trained
    annotations = Path(cfg.data.root) / "annotations" / "train.json"
    saved = load_config(out / "config.yaml")
    stored = load_checkpoint(out / "last.pt")["config"]["eval"]["fitted_prior"]
    assert saved.eval.pose_prior == "train"
    fitted = saved.eval.fitted_prior
    assert stored == {"mean": fitted.mean, "std": fitted.std}
    ref = PosePrior.from_coco(annotations)
    np.testing.assert_allclose(fitted.mean, ref.mean, atol=1e-6)
    np.testing.assert_allclose(fitted.std, ref.std, atol=1e-6)
    # Head (0) to hip (2) of the stick figures, recomputed by a loop over the annotations.
    assert fitted.mean[0][2] == pytest.approx(_naive_pair_mean(annotations, 0, 2), abs=1e-6)
    # A stick figure is not the flat prior: its pairs have their own distances.
    assert np.ptp(np.asarray(fitted.mean)[~np.eye(7, dtype=bool)]) > 0.5


def test_predictor_and_evaluation_group_with_the_stored_prior(trained, tmp_path):
    cfg, out = trained
    fitted = load_config(out / "config.yaml").eval.fitted_prior
    # The checkpoint's own config, and a YAML config without the fit: both use the stored one.
    for given in (None, cfg):
        prior = resolve_pose_prior(Predictor(given, out / "last.pt", device="cpu").cfg.eval)
        np.testing.assert_array_equal(prior.mean, np.asarray(fitted.mean))
    with_fit = evaluate_checkpoint(load_config(out / "config.yaml"), out / "last.pt",
                                   tmp_path / "a", device="cpu", verbose=False, progress=False)
    without = evaluate_checkpoint(cfg, out / "last.pt", tmp_path / "b", device="cpu",
                                  verbose=False, progress=False)
    assert with_fit == without
    assert json.loads((tmp_path / "a" / "results.json").read_text()) == \
        json.loads((tmp_path / "b" / "results.json").read_text())


def test_evaluation_fits_the_prior_for_a_checkpoint_trained_without_it(trained, tmp_path):
    cfg, out = trained
    ckpt = load_checkpoint(out / "last.pt")
    ckpt["config"]["eval"]["fitted_prior"] = None  # as if trained with another prior
    torch.save(ckpt, tmp_path / "old.pt")
    fitted = evaluate_checkpoint(cfg, tmp_path / "old.pt", tmp_path / "a", device="cpu",
                                 verbose=False, progress=False)
    stored = evaluate_checkpoint(cfg, out / "last.pt", tmp_path / "b", device="cpu",
                                 verbose=False, progress=False)
    assert fitted == stored


def test_a_config_asking_for_the_training_prior_without_one_is_refused(trained):
    cfg, _ = trained
    with pytest.raises(ValueError, match=r"eval.pose_prior: 'train'.*eval.fitted_prior"):
        resolve_pose_prior(cfg.eval)
