"""Taking a trained network out of Python: ONNX and ``torch.export`` (docs/design.md §8).

The exported graph is the network up to a chosen stack (early exit), with flat tensor outputs
instead of :class:`~aehg.models.StackOutput` records; the decoders (:func:`aehg.group`,
:func:`aehg.decode_objects`, :func:`aehg.build_graph`) take its numpy outputs as they are.

Example:
    >>> model = build_model(cfg.model).eval()
    >>> export_onnx(model, "pose.onnx", stacks=2, input_size=(512, 512), dynamic=True)
    >>> import onnxruntime as ort
    >>> heatmaps, tags = ort.InferenceSession("pose.onnx").run(None, {"image": x})
    >>> people = aehg.group(heatmaps, tags)
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from aehg.io import atomic_write
from aehg.models.hourglass import StackedHourglass

__all__ = ["ExportableModel", "export_onnx", "export_program", "load_program"]


class ExportableModel(nn.Module):
    """A :class:`StackedHourglass` that returns the maps of its last run stack as a tuple.

    Outputs, in order (names in :attr:`output_names`): ``heatmaps``, ``tags``, then ``sizes``
    when the model regresses boxes, then ``link_heatmaps``, ``src``, ``dst`` when it has links.

    Args:
        model: the network (its weights are shared, not copied).
        stacks: early exit after this many stacks (None: all).

    Shapes:
        image: (B, in_channels, H_in, W_in) -> heatmaps (B, C, H, W), tags (B, C_t, E, H, W),
        sizes (B, 2, H, W), link_heatmaps (B, R, H, W), src (B, E, H, W), dst (B, E, H, W)
    """

    def __init__(self, model: StackedHourglass, stacks: int | None = None) -> None:
        super().__init__()
        if not isinstance(model, StackedHourglass):
            raise TypeError(f"model: expected a StackedHourglass, got {type(model).__name__}")
        n = model.num_stacks if stacks is None else int(stacks)
        if not 1 <= n <= model.num_stacks:
            raise ValueError(f"stacks: expected 1..{model.num_stacks} (the model's stacks), "
                             f"got {stacks}")
        self.model = model
        self.stacks = n

    @property
    def output_names(self) -> list[str]:
        """The names of the outputs, in the order :meth:`forward` returns them."""
        names = ["heatmaps", "tags"]
        if self.model.box_size:
            names.append("sizes")
        if self.model.num_link_classes:
            names += ["link_heatmaps", "src", "dst"]
        return names

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image, stacks=self.stacks)[-1]
        o = out.objects
        maps = [o.heatmaps, o.tags]
        if o.sizes is not None:
            maps.append(o.sizes)
        if out.interactions is not None:
            i = out.interactions
            maps += [i.heatmaps, i.src, i.dst]
        return tuple(maps)


def _example(model: StackedHourglass, input_size: Sequence[int] | int, batch: int
             ) -> torch.Tensor:
    h, w = (input_size, input_size) if isinstance(input_size, int) else map(int, input_size)
    d = model.size_divisor
    if batch < 1:
        raise ValueError(f"batch: expected >= 1, got {batch}")
    if h <= 0 or w <= 0 or h % d or w % d:
        raise ValueError(f"input_size: expected positive multiples of {d} (the model's size "
                         f"divisor), got {h}x{w}")
    device = next(model.parameters()).device
    return torch.zeros(batch, model.stem[0].in_channels, h, w, device=device)


def _example_batch(batch: int, dynamic: bool) -> int:
    # torch.export specialises a dimension of size 1 to the constant 1: trace a dynamic
    # batch with two images.
    return max(batch, 2) if dynamic else batch


def _dynamic_shapes(model: StackedHourglass) -> dict[str, dict[int, object]]:
    # Height and width stay multiples of the size divisor: torch.export proves the forward's
    # divisibility check for every size of this form.
    d = model.size_divisor
    dim = torch.export.Dim
    return {"image": {0: dim("batch", min=1, max=1024), 2: d * dim("h_blocks", min=1, max=256),
                      3: d * dim("w_blocks", min=1, max=256)}}


def export_program(model: StackedHourglass, path: str | os.PathLike[str], *,
                   stacks: int | None = None, input_size: Sequence[int] | int = 512,
                   dynamic: bool = False, batch: int = 1) -> Path:
    """``torch.export`` the network (up to ``stacks``) and save the program (``.pt2``).

    Args:
        model: the network, in eval mode (batch norm uses its running statistics).
        path: destination file, written atomically.
        stacks: early exit after this many stacks (None: all).
        input_size: (H, W) or a side of the example input; multiples of ``size_divisor``.
        dynamic: batch, height and width free (height and width multiples of the size
            divisor), else fixed to the example's.
        batch: the example's batch size.

    Returns:
        The path written. Load it with :func:`load_program`.
    """
    wrapper = ExportableModel(model, stacks).eval()
    example = _example(model, input_size, _example_batch(batch, dynamic))
    with torch.no_grad():
        program = torch.export.export(
            wrapper, (example,), dynamic_shapes=_dynamic_shapes(model) if dynamic else None)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def load_program(path: str | os.PathLike[str]) -> torch.export.ExportedProgram:
    """A program saved by :func:`export_program`; ``.module()`` gives a callable module.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported program not found: {path}")
    return torch.export.load(path)


def export_onnx(model: StackedHourglass, path: str | os.PathLike[str], *,
                stacks: int | None = None, input_size: Sequence[int] | int = 512,
                dynamic: bool = False, batch: int = 1, opset: int | None = None) -> Path:
    """Export the network (up to ``stacks``) to ONNX; input ``image``, outputs named as in
    :attr:`ExportableModel.output_names`.

    Needs the ``onnx`` and ``onnxscript`` packages (``pip install 'aehg[export]'``); run the
    file with ``onnxruntime``.

    Args:
        model: the network, in eval mode.
        path: destination ``.onnx`` file, written atomically.
        stacks: early exit after this many stacks (None: all).
        input_size: (H, W) or a side of the example input; multiples of ``size_divisor``.
        dynamic: batch, height and width free (height and width multiples of the size
            divisor), else fixed.
        batch: the example's batch size.
        opset: ONNX opset version (None: the exporter's default).

    Returns:
        The path written.

    Raises:
        ImportError: ``onnx`` or ``onnxscript`` is not installed (the message says how).
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail early with a clear message)
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the onnx and onnxscript packages: pip install "
                          f"'aehg[export]' ({exc})") from exc
    wrapper = ExportableModel(model, stacks).eval()
    example = _example(model, input_size, _example_batch(batch, dynamic))
    kwargs = {} if opset is None else {"opset_version": opset}
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper, (example,), input_names=["image"], output_names=wrapper.output_names,
            dynamic_shapes=_dynamic_shapes(model) if dynamic else None, dynamo=True,
            verbose=False, **kwargs)
    data = program.model_proto.SerializeToString()
    return atomic_write(path, lambda f: f.write(data))
