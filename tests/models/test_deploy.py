"""Exported networks (ONNX through onnxruntime, torch.export) equal eager PyTorch, and the
decoders take their numpy outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import aehg
from aehg.models import StackedHourglass
from aehg.models.deploy import ExportableModel, export_onnx, export_program, load_program


def _model(**kw) -> StackedHourglass:
    torch.manual_seed(0)
    args = dict(num_stacks=2, channels=16, depth=2, num_classes=3, embedding_dim=2,
                num_link_classes=2, box_size=True, heatmap_activation="sigmoid")
    args.update(kw)
    model = StackedHourglass(**args)
    # Non-trivial batch-norm statistics, so that eval mode is really what is exported.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    model = _model()
    path = tmp_path_factory.mktemp("onnx") / "graph.onnx"
    export_onnx(model, path, stacks=1, input_size=64, dynamic=True)
    return model, path


def test_onnx_outputs_equal_eager_at_several_sizes(onnx_file):
    model, path = onnx_file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["heatmaps", "tags", "sizes",
                                                       "link_heatmaps", "src", "dst"]
    gen = torch.Generator().manual_seed(1)
    for batch, h, w in ((1, 64, 64), (3, 32, 96)):  # dynamic batch, height and width
        x = torch.randn(batch, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = ExportableModel(model, stacks=1)(x)
        got = session.run(None, {"image": x.numpy()})
        for name, a, b in zip(ExportableModel(model).output_names, got, ref, strict=True):
            assert a.shape == tuple(b.shape), name
            np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0, err_msg=name)
        # The decoders read the exported outputs as they are.
        heat, tags, sizes, lheat, src, dst = got
        objects = aehg.decode_objects(heat, tags, sizes, detection_threshold=0.0, top_k=5)
        eager = aehg.decode_objects(ref[0], ref[1], ref[2], detection_threshold=0.0, top_k=5)
        for a, b in zip(objects, eager, strict=True):
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)
        graphs = aehg.build_graph(objects, lheat, src, dst, link_threshold=0.0)
        assert len(graphs) == batch and all(g.number_of_nodes() == 5 for g in graphs)


def test_torch_export_round_trip_every_stack(tmp_path):
    model = _model(num_link_classes=0, box_size=False, tag_per_class=True, embedding_dim=1,
                   heatmap_activation="linear")
    x = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(2))
    for stacks in (1, 2):
        path = export_program(model, tmp_path / f"s{stacks}.pt2", stacks=stacks,
                              input_size=64, dynamic=True)
        module = load_program(path).module()
        with torch.no_grad():
            got, ref = module(x), model(x, stacks=stacks)[-1].objects
        assert len(got) == 2
        torch.testing.assert_close(got[0], ref.heatmaps, atol=1e-5, rtol=0)
        torch.testing.assert_close(got[1], ref.tags, atol=1e-5, rtol=0)
        people = aehg.group(got[0].numpy(), got[1].numpy(), detection_threshold=0.0)
        assert len(people) == 2


def test_fixed_size_program_and_bad_arguments(tmp_path):
    model = _model(num_stacks=1)
    path = export_program(model, tmp_path / "fixed.pt2", input_size=(32, 48))
    module = load_program(path).module()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(module(x)[0], model(x)[-1].objects.heatmaps)
    with pytest.raises(ValueError, match=r"input_size: expected positive multiples of 16"):
        export_program(model, tmp_path / "bad.pt2", input_size=40)
    with pytest.raises(ValueError, match=r"stacks: expected 1..1"):
        export_program(model, tmp_path / "bad.pt2", stacks=2)
    with pytest.raises(FileNotFoundError, match="exported program not found"):
        load_program(tmp_path / "missing.pt2")
    assert not (tmp_path / "bad.pt2").exists()
