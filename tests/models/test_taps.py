import numpy as np
import torch

from tlfs.models.backbones import load_backbone
from tlfs.models.taps import TapNetwork


def test_a_half_precision_copy_preprocesses_in_half_precision():
    # the fp16 bench row runs TapNetwork(...).half(): uint8 pixels must reach the first
    # convolution as fp16, not as fp32 against fp16 weights
    loaded = load_backbone("resnet50", random_weights=True)
    network = TapNetwork(loaded.spec, loaded.module).eval().half()
    pixels = torch.from_numpy(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    assert network.preprocess(pixels).dtype == torch.float16
    assert TapNetwork(loaded.spec, load_backbone("resnet50", random_weights=True).module).preprocess(pixels).dtype == torch.float32
