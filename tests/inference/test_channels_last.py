"""Inference runs in channels_last and gives the contiguous network's maps."""

from __future__ import annotations

import numpy as np
import torch

from aehg.inference import flip_back, forward_maps, merge_flip
from aehg.models import StackedHourglass


def test_channels_last_maps_equal_contiguous_maps():
    torch.manual_seed(0)
    kw = dict(num_stacks=2, channels=16, depth=2, num_classes=4, embedding_dim=2,
              num_link_classes=2, box_size=True)
    plain = StackedHourglass(**kw).eval()
    cl = StackedHourglass(**kw).eval()
    cl.load_state_dict(plain.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 48)
    flip_map = np.array([1, 0, 3, 2])
    with torch.no_grad():
        eager = plain(x)[-1]  # contiguous weights, contiguous input: the plain NCHW path
        mirrored = flip_back(plain(x.flip(-1))[-1], flip_map)
        for flip, ref in ((False, eager), (True, merge_flip(eager, mirrored))):
            got = forward_maps(cl, x, None, flip, flip_map)
            # The network ran in channels_last: channels are the innermost dimension.
            assert got.objects.heatmaps.stride(1) == 1 != eager.objects.heatmaps.stride(1)
            pairs = [(got.objects.heatmaps, ref.objects.heatmaps),
                     (got.objects.tags, ref.objects.tags), (got.objects.sizes, ref.objects.sizes),
                     (got.interactions.heatmaps, ref.interactions.heatmaps),
                     (got.interactions.src, ref.interactions.src),
                     (got.interactions.dst, ref.interactions.dst)]
            for a, b in pairs:
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
