"""Input files for the `stlic` CLI tests: a tiny model, a small image, its bitstream, an eval
summary, an anchor, a training log and a config, made once per session (seconds)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from stlic.checkpoints import save_model_checkpoint
from stlic.codec.codec import compress_image
from stlic.codec.image_io import write_image
from stlic.models import STLIC
from stlic.paths import CONFIG_DIR


@pytest.fixture(scope="session")
def cli_files(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("cli_inputs")
    torch.manual_seed(0)
    model = STLIC("tiny").eval()
    model.update(force=True)
    save_model_checkpoint(root / "tiny.pt", model, model.config)
    image = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0))
    (root / "images").mkdir()
    write_image(root / "images" / "photo.png", image)
    (root / "in.stlic").write_bytes(compress_image(model, image, 0.0))
    summary = {"method": "mine", "bpp": 0.2, "lpips_name": "ST-LPIPS(vgg)",
               "outputs": {"refined": {"psnr": 30.0, "lpips": 0.1}}}
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "anchor.csv").write_text("method,bpp,psnr\nA,0.1,28\nA,0.2,30\nA,0.3,32\n")
    (root / "run").mkdir()
    record = {"step": 1, "gen_loss": 0.7, "disc_loss": 0.69}
    (root / "run" / "train_log.jsonl").write_text(json.dumps(record) + "\n")
    shutil.copy(CONFIG_DIR / "stlic_tiny.yaml", root / "config.yaml")
    return SimpleNamespace(root=root, checkpoint=root / "tiny.pt", image=root / "images" / "photo.png",
                           image_dir=root / "images", bitstream=root / "in.stlic", summary=root / "summary.json",
                           anchor=root / "anchor.csv", run=root / "run", log=root / "run" / "train_log.jsonl",
                           config=root / "config.yaml")


@pytest.fixture(scope="session")
def fast_config_file(tmp_path_factory):
    """stlic_tiny with one 64-pixel stage of 4 steps, batch 1, one Wasserstein scale."""
    import yaml

    from stlic.training.config import load_config

    data = load_config("stlic_tiny").to_dict()
    data["schedule"]["stages"] = [{"patch_size": 64, "steps": 4, "data": []}]
    data["perceptual"]["wasserstein_num_scales"] = 1
    data.update(batch_size=1)
    path = tmp_path_factory.mktemp("train_cfg") / "fast.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def inputs_unchanged(cli_files):
    """Asserts, after the test, that every input file is byte-identical and nothing was added."""
    def snapshot() -> dict[str, bytes]:
        root: Path = cli_files.root
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    before = snapshot()
    yield
    assert snapshot() == before
