import numpy as np
import torch

from tlfs.models.backbones import load_backbone
from tlfs.models.taps import TapNetwork, grid


def test_a_half_precision_copy_preprocesses_in_half_precision():
    # the fp16 bench row runs TapNetwork(...).half(): uint8 pixels must reach the first
    # convolution as fp16, not as fp32 against fp16 weights
    loaded = load_backbone("resnet50", random_weights=True)
    network = TapNetwork(loaded.spec, loaded.module).eval().half()
    pixels = torch.from_numpy(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    assert network.preprocess(pixels).dtype == torch.float16
    assert TapNetwork(loaded.spec, load_backbone("resnet50", random_weights=True).module).preprocess(pixels).dtype == torch.float32


def test_the_grid_is_the_four_quadrant_averages_one_after_another_as_adaptive_pooling_cuts_them():
    for size in (6, 7):  # odd sizes: the quadrants share the middle row and column
        maps = torch.randn(3, 5, size, size)
        quadrants = torch.nn.functional.adaptive_avg_pool2d(maps, 2)  # [3, 5, 2, 2]: channel-major
        want = quadrants.permute(0, 2, 3, 1).reshape(3, 4 * 5)  # top-left, top-right, bottom-left, bottom-right
        torch.testing.assert_close(grid(maps), want)
    even = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(grid(even).view(2, 4, 4).mean(1), even.mean((2, 3)))


def test_a_grid_variant_returns_each_taps_average_then_the_grids():
    loaded = load_backbone("efficientnet_lite0_2x2", random_weights=True)
    network = TapNetwork(loaded.spec, loaded.module, taps=["block7", "head"]).eval()
    assert network.output_names == ["block7", "head", "block7_2x2", "head_2x2"]
    with torch.no_grad():
        outputs = network(torch.from_numpy(np.zeros((2, 32, 32, 3), dtype=np.uint8)))
    assert [tuple(o.shape) for o in outputs] == [(2, 80), (2, 1280), (2, 320), (2, 5120)]
