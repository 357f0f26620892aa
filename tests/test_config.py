from pathlib import Path

import pytest
import yaml

from aehg.config import Config, ConfigError, load_config, parse_overrides, save_config


def _write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_yaml_values(tmp_path):
    p = _write(tmp_path, "model:\n  num_stacks: 3\n  channels: 64\ntrain:\n  lr: 1e-3\n")
    cfg = load_config(p)
    assert cfg.model.num_stacks == 3 and cfg.model.channels == 64
    # YAML reads 1e-3 as a string; the float field converts it.
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model.depth == Config().model.depth


def test_overrides_convert_to_field_types(tmp_path):
    p = _write(tmp_path, "model:\n  num_stacks: 3\n")
    cfg = load_config(p, ["model.num_stacks=1", "train.lr=5e-4", "model.box_size=true",
                          "data.augment.rotation=10", "eval.scales=[1.0, 1.5]",
                          "eval.stacks=null", "loss.push_margin=1", "train.output_dir=out/x"])
    assert cfg.model.num_stacks == 1
    assert cfg.train.lr == 5e-4
    assert cfg.model.box_size is True
    assert cfg.data.augment.rotation == 10.0 and isinstance(cfg.data.augment.rotation, float)
    assert cfg.eval.scales == [1.0, 1.5]
    assert cfg.eval.stacks is None
    assert cfg.loss.push_margin == 1.0
    assert cfg.train.output_dir == "out/x"


def test_unknown_key_names_dotted_key_and_file(tmp_path):
    p = _write(tmp_path, "model:\n  num_stack: 3\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: model\.num_stack: unknown key"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"data\.augment\.spin: unknown key"):
        load_config(None, ["data.augment.spin=3"])
    with pytest.raises(ConfigError, match=r"x\.yaml: modle: unknown key"):
        load_config(_write(tmp_path, "modle: {}\n", "x.yaml"))


def test_wrong_type_names_key(tmp_path):
    p = _write(tmp_path, "model:\n  num_stacks: two\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: model\.num_stacks: expected int, got 'two'"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"model\.box_size: expected bool"):
        load_config(None, ["model.box_size=3"])
    with pytest.raises(ConfigError, match=r"model\.block: expected one of 'residual', 'conv'"):
        load_config(None, ["model.block=dense"])
    with pytest.raises(ConfigError, match=r"eval\.scales\[1\]: expected float"):
        load_config(None, ["eval.scales=[1, x]"])
    with pytest.raises(ConfigError, match=r"model: expected a mapping"):
        load_config(_write(tmp_path, "model: 3\n", "m.yaml"))


def test_bad_values_name_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.num_stacks: expected a positive value"):
        load_config(None, ["model.num_stacks=0"])
    with pytest.raises(ConfigError, match=r"data\.input_size: expected a multiple"):
        load_config(None, ["data.input_size=500"])
    with pytest.raises(ConfigError, match=r"eval\.nms_kernel: expected an odd"):
        load_config(None, ["eval.nms_kernel=4"])
    with pytest.raises(ConfigError, match=r"eval\.stacks: expected at most model\.num_stacks"):
        load_config(None, ["model.num_stacks=2", "eval.stacks=3"])
    with pytest.raises(ConfigError, match=r"data\.flip_map: expected 17 entries"):
        load_config(None, ["data.flip_map=[0, 1]"])
    with pytest.raises(ConfigError, match=r"data\.augment\.flip_prob"):
        load_config(None, ["data.augment.flip_prob=1.5"])
    with pytest.raises(ConfigError, match=r"train\.ema_decay: expected a value in \[0, 1\)"):
        load_config(None, ["train.ema_decay=1.0"])


def test_malformed_files_and_overrides(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(_write(tmp_path, "model: [1,\n", "bad.yaml"))
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping at the top level"):
        load_config(_write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match="malformed key"):
        parse_overrides(["train..lr=1"])


def test_save_round_trip(tmp_path):
    cfg = load_config(None, ["model.num_stacks=3", "data.flip_map=null", "eval.scales=[0.5, 1]"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    assert yaml.safe_load(out.read_text())["model"]["num_stacks"] == 3
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    load_config(path)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_names_accepted(device):
    assert load_config(None, [f"train.device={device}"]).train.device == device


@pytest.mark.parametrize("device", ["banana", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1",
                                    "mps:0", "cpu:0", " cpu", ""])
def test_device_names_rejected(tmp_path, device):
    p = _write(tmp_path, f"train:\n  device: {device!r}\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == (f"{p}: train.device: expected auto, cpu, cuda, cuda:N or mps, "
                               f"got {device!r}")


def test_unavailable_device_is_a_config_error(monkeypatch):
    import torch

    from aehg.config import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1", torch.device("cuda", 0)):
        with pytest.raises(ConfigError) as info:
            resolve_device(name, key="train.device")
        assert str(info.value) == (f"train.device: {str(name)!r} requested but CUDA is not "
                                   f"available on this machine (use cpu or auto)")
    with pytest.raises(ConfigError) as info:
        resolve_device("mps", key="--device")
    assert str(info.value) == ("--device: 'mps' requested but MPS is not available on this "
                               "machine (use cpu or auto)")
    with pytest.raises(ConfigError) as info:
        resolve_device("banana")
    assert str(info.value) == "device: expected auto, cpu, cuda, cuda:N or mps, got 'banana'"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError) as info:
        resolve_device("cuda:2", key="train.device")
    assert str(info.value) == ("train.device: 'cuda:2' requested but this machine has 2 CUDA "
                               "devices (cuda:0 to cuda:1)")


def test_binary_or_non_utf8_config_file_names_the_file(tmp_path):
    png = tmp_path / "photo.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ConfigError) as info:
        load_config(png)
    assert str(info.value) == (f"{png}: not a UTF-8 text file (expected a YAML config; byte 0 "
                               f"is 0x89)")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("train:\n  output_dir: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(latin1)
    assert str(info.value) == (f"{latin1}: not a UTF-8 text file (expected a YAML config; "
                               f"byte 24 is 0xe9)")
    nul = _write(tmp_path, "train:\n  lr: 1\x00\n", "nul.yaml")   # UTF-8, but not text
    with pytest.raises(ConfigError, match=r"nul\.yaml: not valid YAML"):
        load_config(nul)


def test_pose_decoding_options_are_checked():
    cfg = load_config(None, ["model.num_classes=3", "eval.part_order=[2,0,1]",
                             "eval.missing_keypoints=zero", "eval.pose_nms=oks"])
    assert cfg.eval.part_order == [2, 0, 1] and cfg.eval.pose_nms == "oks"
    for override, message in (
            ("eval.part_order=[0,0,1]", r"eval.part_order: expected a permutation of 0..C-1"),
            ("eval.part_order=[1,0]", r"eval.part_order: expected 3 entries"),
            ("eval.missing_keypoints=mean", r"eval.missing_keypoints: expected one of"),
            ("eval.pose_nms=iou", r"eval.pose_nms: expected one of"),
            ("eval.pose_nms_threshold=1.5", r"eval.pose_nms_threshold: expected a value")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, ["model.num_classes=3", override])


def test_fitted_prior_is_checked_and_survives_a_save(tmp_path):
    square = "{mean: [[0, -1], [-1, 0]], std: [[1, 0.3], [0.3, 1]]}"
    cfg = load_config(None, ["model.num_classes=2", "eval.pose_prior=train",
                             f"eval.fitted_prior={square}"])
    assert cfg.eval.fitted_prior.mean == [[0.0, -1.0], [-1.0, 0.0]]
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    for classes, prior, message in (
            (2, "{mean: [[0, -1], [-1, 0]], std: [[1, 0.3]]}",
             r"eval.fitted_prior.std: expected a square C x C list"),
            (2, "{mean: [[0, -1], [-1]], std: [[1, 0.3], [0.3, 1]]}",
             r"eval.fitted_prior.mean: expected a square C x C list"),
            (3, square, r"eval.fitted_prior: expected a prior of 3 parts \(model.num_classes\)"),
            (2, "{mean: [[0, 1], [1, 0]]}", r"eval.fitted_prior.*std"),
            (2, "[[0, 1], [1, 0]]", r"eval.fitted_prior: expected")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [f"model.num_classes={classes}", f"eval.fitted_prior={prior}"])
