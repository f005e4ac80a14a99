"""model.pt carries a SHA-256 of its weights: one flipped bit in a tensor is refused on load."""
import warnings
import zipfile

import pytest
import torch

from stlic.checkpoints import load_model_checkpoint, save_model_checkpoint, weights_digest


def _tensor_data_offset(path):
    """Offset of the middle byte of the largest stored tensor inside the checkpoint's zip."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
        assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(handle.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_length + extra_length + info.file_size // 2


def test_one_flipped_bit_in_the_weights_is_refused(coding_model, tmp_path):
    path = save_model_checkpoint(tmp_path / "model.pt", coding_model, coding_model.config)
    load_model_checkpoint(path)  # intact: loads
    data = bytearray(path.read_bytes())
    data[_tensor_data_offset(path)] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt: its weights do not match the checksum"):
        load_model_checkpoint(path)


def test_the_digest_covers_names_dtypes_shapes_and_values():
    state = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    base = weights_digest(state)
    assert weights_digest({k: v.clone() for k, v in reversed(state.items())}) == base  # key order
    for changed in ({**state, "a": state["a"].view(3, 2)}, {**state, "a": state["a"].double()},
                    {"c": state["a"], "b": state["b"]}, {**state, "b": state["b"] * 2}):
        assert weights_digest(changed) != base


def test_a_file_written_before_checksums_loads_with_a_warning(coding_model, tmp_path):
    path = save_model_checkpoint(tmp_path / "model.pt", coding_model, coding_model.config)
    payload = torch.load(path, weights_only=True)
    del payload["weights_sha256"]
    torch.save(payload, path)
    with pytest.warns(UserWarning, match="no weights checksum"):
        load_model_checkpoint(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model_checkpoint(save_model_checkpoint(tmp_path / "new.pt", coding_model, coding_model.config))
