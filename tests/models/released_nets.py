"""The released hourglass networks' module layouts, written out for the converter tests.

Each class keeps the attribute names (so the state-dict keys), the layer order and the forward
pass of its source's definition, so that a state dict built here has the source's exact keys
and shapes, and a forward pass gives the reference output:

* pose-ae-train ``models/layers.py`` (``Conv``, ``Hourglass``) and ``models/posenet.py``
  (``Merge``, ``PoseNet``; ``bn=False``: a conv with bias, then ReLU);
* pytorch_stacked_hourglass ``models/layers.py`` (``Conv`` = conv with bias, BN, ReLU;
  ``Residual`` with its ``skip_layer`` built even for equal widths; ``Hourglass``) and
  ``models/posenet.py`` (``PoseNet`` with ``pre``, ``hgs``, ``features``, ``outs``, merges);
* mmpose ``mmpose/models/backbones/hourglass_ae.py`` (``HourglassAEModule``,
  ``HourglassAENet``) with mmcv's ``ConvModule`` (``conv`` without bias when normalised,
  ``bn``, ReLU ``activate``).

``increase`` is passed down the hourglass levels here, so the tests can use narrow networks;
pose-ae-train's own recursion uses its default 128 at every level, which is the full-size
``increase=128`` case.
"""

from __future__ import annotations

import torch
from torch import nn

# --------------------------------------------------------------------------- pose-ae-train


class PaeConv(nn.Module):
    def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1,
                 relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inp, out, kernel, stride, padding=(kernel - 1) // 2, bias=True)
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.relu(x) if self.relu is not None else x


class PaeHourglass(nn.Module):
    def __init__(self, n: int, f: int, increase: int = 128) -> None:
        super().__init__()
        nf = f + increase
        self.up1 = PaeConv(f, f, 3)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.low1 = PaeConv(f, nf, 3)
        self.low2 = PaeHourglass(n - 1, nf, increase) if n > 1 else PaeConv(nf, nf, 3)
        self.low3 = PaeConv(nf, f, 3)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up1(x) + self.up2(self.low3(self.low2(self.low1(self.pool1(x)))))


class PaeMerge(nn.Module):
    def __init__(self, x_dim: int, y_dim: int) -> None:
        super().__init__()
        self.conv = PaeConv(x_dim, y_dim, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PaePoseNet(nn.Module):
    def __init__(self, nstack: int, inp_dim: int, oup_dim: int, increase: int = 128) -> None:
        super().__init__()
        self.pre = nn.Sequential(PaeConv(3, 64, 7, 2), PaeConv(64, 128), nn.MaxPool2d(2, 2),
                                 PaeConv(128, 128), PaeConv(128, inp_dim))
        self.features = nn.ModuleList(
            nn.Sequential(PaeHourglass(4, inp_dim, increase), PaeConv(inp_dim, inp_dim, 3),
                          PaeConv(inp_dim, inp_dim, 3)) for _ in range(nstack))
        self.outs = nn.ModuleList(PaeConv(inp_dim, oup_dim, 1, relu=False)
                                  for _ in range(nstack))
        self.merge_features = nn.ModuleList(PaeMerge(inp_dim, inp_dim)
                                            for _ in range(nstack - 1))
        self.merge_preds = nn.ModuleList(PaeMerge(oup_dim, inp_dim) for _ in range(nstack - 1))
        self.nstack = nstack

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) RGB in [0, 1] (the source permutes NHWC input first)."""
        x = self.pre(x)
        preds = []
        for i in range(self.nstack):
            feature = self.features[i](x)
            preds.append(self.outs[i](feature))
            if i != self.nstack - 1:
                x = x + self.merge_preds[i](preds[-1]) + self.merge_features[i](feature)
        return preds


# ------------------------------------------------------------------- pytorch_stacked_hourglass


class PshConv(nn.Module):
    def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, bn: bool = False,
                 relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inp, out, kernel, stride, padding=(kernel - 1) // 2, bias=True)
        self.relu = nn.ReLU() if relu else None
        self.bn = nn.BatchNorm2d(out) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x) if self.relu is not None else x


class PshResidual(nn.Module):
    def __init__(self, inp: int, out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv1 = PshConv(inp, out // 2, 1, relu=False)
        self.bn2 = nn.BatchNorm2d(out // 2)
        self.conv2 = PshConv(out // 2, out // 2, 3, relu=False)
        self.bn3 = nn.BatchNorm2d(out // 2)
        self.conv3 = PshConv(out // 2, out, 1, relu=False)
        self.skip_layer = PshConv(inp, out, 1, relu=False)
        self.need_skip = inp != out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.skip_layer(x) if self.need_skip else x
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + residual


class PshHourglass(nn.Module):
    def __init__(self, n: int, f: int, increase: int = 0) -> None:
        super().__init__()
        nf = f + increase
        self.up1 = PshResidual(f, f)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.low1 = PshResidual(f, nf)
        self.low2 = PshHourglass(n - 1, nf, increase) if n > 1 else PshResidual(nf, nf)
        self.low3 = PshResidual(nf, f)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up1(x) + self.up2(self.low3(self.low2(self.low1(self.pool1(x)))))


class PshMerge(nn.Module):
    def __init__(self, x_dim: int, y_dim: int) -> None:
        super().__init__()
        self.conv = PshConv(x_dim, y_dim, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PshPoseNet(nn.Module):
    def __init__(self, nstack: int, inp_dim: int, oup_dim: int, increase: int = 0) -> None:
        super().__init__()
        self.nstack = nstack
        self.pre = nn.Sequential(PshConv(3, 64, 7, 2, bn=True, relu=True), PshResidual(64, 128),
                                 nn.MaxPool2d(2, 2), PshResidual(128, 128),
                                 PshResidual(128, inp_dim))
        self.hgs = nn.ModuleList(nn.Sequential(PshHourglass(4, inp_dim, increase))
                                 for _ in range(nstack))
        self.features = nn.ModuleList(
            nn.Sequential(PshResidual(inp_dim, inp_dim),
                          PshConv(inp_dim, inp_dim, 1, bn=True, relu=True))
            for _ in range(nstack))
        self.outs = nn.ModuleList(PshConv(inp_dim, oup_dim, 1, relu=False)
                                  for _ in range(nstack))
        self.merge_features = nn.ModuleList(PshMerge(inp_dim, inp_dim)
                                            for _ in range(nstack - 1))
        self.merge_preds = nn.ModuleList(PshMerge(oup_dim, inp_dim) for _ in range(nstack - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) RGB in [0, 1]."""
        x = self.pre(x)
        preds = []
        for i in range(self.nstack):
            feature = self.features[i](self.hgs[i](x))
            preds.append(self.outs[i](feature))
            if i < self.nstack - 1:
                x = x + self.merge_preds[i](preds[-1]) + self.merge_features[i](feature)
        return preds


# --------------------------------------------------------------------------- mmpose


class MmConvModule(nn.Module):
    def __init__(self, inp: int, out: int, kernel: int, stride: int = 1, padding: int = 0,
                 norm: bool = True, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inp, out, kernel, stride, padding, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(out)
        self.norm = norm
        self.activate = nn.ReLU() if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm:
            x = self.bn(x)
        return self.activate(x) if self.activate is not None else x


class MmHourglassAEModule(nn.Module):
    def __init__(self, depth: int, stage_channels: tuple[int, ...]) -> None:
        super().__init__()
        cur, nxt = stage_channels[0], stage_channels[1]
        self.up1 = MmConvModule(cur, cur, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.low1 = MmConvModule(cur, nxt, 3, padding=1)
        self.low2 = MmHourglassAEModule(depth - 1, stage_channels[1:]) if depth > 1 else \
            MmConvModule(nxt, nxt, 3, padding=1)
        self.low3 = MmConvModule(nxt, cur, 3, padding=1)
        self.up2 = nn.UpsamplingNearest2d(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up1(x) + self.up2(self.low3(self.low2(self.low1(self.pool1(x)))))


class MmHourglassAENet(nn.Module):
    def __init__(self, downsample_times: int = 4, num_stacks: int = 2,
                 stage_channels: tuple[int, ...] = (256, 384, 512, 640, 768),
                 feat_channel: int = 256, out_channel: int = 34) -> None:
        super().__init__()
        self.num_stacks = num_stacks
        cur = stage_channels[0]
        self.stem = nn.Sequential(
            MmConvModule(3, 64, 7, padding=3, stride=2), MmConvModule(64, 128, 3, padding=1),
            nn.MaxPool2d(2, 2), MmConvModule(128, 128, 3, padding=1),
            MmConvModule(128, feat_channel, 3, padding=1))
        self.hourglass_modules = nn.ModuleList(
            nn.Sequential(MmHourglassAEModule(downsample_times, stage_channels),
                          MmConvModule(feat_channel, feat_channel, 3, padding=1),
                          MmConvModule(feat_channel, feat_channel, 3, padding=1))
            for _ in range(num_stacks))
        self.out_convs = nn.ModuleList(MmConvModule(cur, out_channel, 1, norm=False, act=False)
                                       for _ in range(num_stacks))
        self.remap_out_convs = nn.ModuleList(MmConvModule(out_channel, feat_channel, 1,
                                                          act=False)
                                             for _ in range(num_stacks - 1))
        self.remap_feature_convs = nn.ModuleList(MmConvModule(feat_channel, feat_channel, 1,
                                                              act=False)
                                                 for _ in range(num_stacks - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) ImageNet-normalised RGB."""
        inter = self.stem(x)
        outs = []
        for i in range(self.num_stacks):
            hg = self.hourglass_modules[i](inter)
            out = self.out_convs[i](hg)
            outs.append(out)
            if i < self.num_stacks - 1:
                inter = inter + self.remap_out_convs[i](out) + self.remap_feature_convs[i](hg)
        return outs


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Distinct values in every tensor: batch norms get random affine and running statistics
    (their defaults are constant), counters distinct integers; convs keep their random init
    with a random bias."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, (name, t) in enumerate(module.state_dict().items()):
            if name.endswith("num_batches_tracked"):
                t.fill_(1000 + i)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("running_mean", "bias")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.dim() == 1:  # batch-norm weight
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=g))
    return module
