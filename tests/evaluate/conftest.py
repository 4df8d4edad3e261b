import pytest
import torch

from tests.fixtures.images import R


@pytest.fixture(scope="session")
def extractor():
    """The built-in tiny backbone (random weights) with the `unet` taps at R px."""
    from hairdiff.extract.backbone import load_backbone
    from hairdiff.extract.features import FeatureExtractor
    from hairdiff.extract.taps import resolve_taps

    bb = load_backbone("tiny", device="cpu", dtype=torch.float32)
    return FeatureExtractor(bb, resolve_taps("unet", bb), resolution=R)
