"""The codec on CUDA: a file coded and decoded there is bit-identical to the deterministic
reconstruction there, and the refined output agrees with the CPU's to float tolerance."""
import numpy as np
import pytest
import torch

from stlic.codec.codec import compress_image, decompress_image

pytestmark = pytest.mark.gpu
LEVEL = 0.3


def test_cuda_file_roundtrip_is_bit_identical_to_cuda_reconstruct(model_factory, photo):
    model = model_factory().to("cuda")
    model.update(force=True)
    data = compress_image(model, photo, LEVEL)
    decoded = decompress_image(model, data)
    reference = model.reconstruct(photo[None].cuda(), float(np.float32(LEVEL)))
    assert decoded.x_hat.is_cuda and torch.equal(decoded.x_hat, reference.x_hat)
    assert torch.equal(decoded.x_refined, reference.x_refined)
    cpu = model_factory().reconstruct(photo[None], float(np.float32(LEVEL)))
    torch.testing.assert_close(decoded.x_refined.cpu(), cpu.x_refined, rtol=0, atol=2e-2)
