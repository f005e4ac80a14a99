"""Start training from trained weights (``stlic train --init CHECKPOINT``).

ST-LIC "is built upon LALIC": its perceptual phase starts from a trained rate-distortion codec.
:func:`init_main_network` loads the main network (``model.main``) from

- an ``stlic`` model file (``stlic.checkpoints.save_model_checkpoint``, e.g. ``RUN/model.pt``),
- an ``stlic`` training checkpoint (``RUN/checkpoint.pt``), or
- an official LALIC checkpoint, through :mod:`stlic.models.lalic_keys`.

Only ``main.*`` tensors are taken: the refiner keeps its initialisation (a zero head, i.e. the
identity) and the optimizers start fresh; the caller does that by building a new solver.
The returned :class:`InitReport` lists every key that was not used and every key left as
initialised, so nothing is dropped silently, and the QVRF rate coefficients the file was trained
for: :func:`rate_range_change` says when the new config's differ (level ``l`` would no longer
mean the bitrate it was trained for; ``stlic train --init`` refuses that unless
``--accept-rate-range``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
from torch import Tensor

from stlic.checkpoints import CHECKPOINT_FORMAT, RESIZABLE_BUFFERS
from stlic.models.lalic_keys import REBUILT_PREFIX, load_lalic_state_dict

MAIN_PREFIX = "main."
REFINER_PREFIX = "refiner."


def _span(lambdas) -> str:
    return f"[{lambdas[0]:.4g}, {lambdas[-1]:.4g}] ({len(lambdas)} levels)"


def rate_range_change(report: InitReport, rate_lambdas) -> str | None:
    """None when ``rate_lambdas`` (the new run's QVRF levels) equal the file's (to 1e-6 relative) or
    the file records none; else a sentence naming both ranges."""
    old = report.rate_lambdas
    if old is None:
        return None
    new = list(rate_lambdas)
    if len(old) == len(new) and all(abs(a - b) <= 1e-6 * max(abs(a), abs(b)) for a, b in zip(old, new)):
        return None
    return (f"the config's rate range {_span(new)} differs from the QVRF levels {report.source} was trained "
            f"for, {_span(old)}: level l would no longer mean the bitrate it was trained for")


@dataclass
class InitReport:
    """Where the weights came from and which keys were not used / not provided."""

    source: str
    kind: str  # "stlic-model" | "stlic-training" | "lalic-official"
    loaded: int = 0
    unused: list[str] = field(default_factory=list)  # keys of the file that were not loaded
    missing: list[str] = field(default_factory=list)  # keys of model.main left as initialised
    rate_lambdas: list[float] | None = None  # the file's QVRF levels (None: not recorded, e.g. official LALIC)

    def summary(self) -> str:
        text = f"initialised the main network from {self.source} ({self.kind}): {self.loaded} tensors"
        refiner = [k for k in self.unused if k.startswith(REFINER_PREFIX)]
        other = [k for k in self.unused if not k.startswith(REFINER_PREFIX)]
        if refiner:
            text += (f"; the file's refiner ({len(refiner)} tensors, refiner.*) is not used: --init takes the main "
                     "network only and the refiner starts as the identity (zero last layer), whatever the file held")
        if other:
            text += f"; {len(other)} other keys not used (e.g. {other[:3]})"
        if self.missing:
            text += f"; {len(self.missing)} keys left as initialised (e.g. {self.missing[:3]})"
        return text

    def save(self, path: str | Path) -> None:
        from stlic.output_files import atomic_write_text

        atomic_write_text(path, json.dumps(asdict(self), indent=1) + "\n")


def _read(path: Path) -> Mapping:
    if not path.is_file():
        raise FileNotFoundError(f"--init: {str(path)!r} is not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or pickled objects
        raise ValueError(f"--init: {str(path)!r} is not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, Mapping):
        raise ValueError(f"--init: {str(path)!r} does not hold a state dict")
    return payload


def _load_ours(main: nn.Module, state: Mapping[str, Tensor], report: InitReport) -> InitReport:
    """Load the ``main.*`` tensors of one of our state dicts into ``main`` (shapes must match)."""
    own = main.state_dict()
    taken = {k[len(MAIN_PREFIX):]: v for k, v in state.items() if k.startswith(MAIN_PREFIX)}
    if not taken:
        raise ValueError(f"--init: {report.source!r} has no 'main.' weights")
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in taken.items()
                  if k in own and v.shape != own[k].shape and not k.endswith(RESIZABLE_BUFFERS)]
    if mismatched:
        raise ValueError(f"--init: {report.source!r} was trained with another model size ({mismatched[0]}); "
                         "use the same model preset")
    result = main.load_state_dict(taken, strict=False)
    report.unused = sorted(k for k in state if not k.startswith(MAIN_PREFIX))
    report.unused += sorted(MAIN_PREFIX + k for k in result.unexpected_keys)
    report.missing = sorted(MAIN_PREFIX + k for k in result.missing_keys)
    report.loaded = len(taken) - len(result.unexpected_keys)
    return report


def _training_lambdas(payload: Mapping) -> list[float] | None:
    """QVRF levels of the run a training checkpoint belongs to (None if its config does not read)."""
    from stlic.training.config import ConfigError, TrainConfig

    try:
        return list(TrainConfig.from_dict(payload["config"]).model_config().rate_lambdas)
    except (ConfigError, KeyError, TypeError):
        return None


def init_main_network(model: nn.Module, path: str | Path) -> InitReport:
    """Load ``model.main`` from the checkpoint at ``path``; see the module docstring."""
    path = Path(path)
    payload = _read(path)
    if payload.get("format") == CHECKPOINT_FORMAT:
        lambdas = (payload.get("model_config") or {}).get("rate_lambdas")
        return _load_ours(model.main, payload["state_dict"], InitReport(
            str(path), "stlic-model", rate_lambdas=[float(v) for v in lambdas] if lambdas else None))
    if "step" in payload and isinstance(payload.get("model"), Mapping):
        return _load_ours(model.main, payload["model"], InitReport(
            str(path), "stlic-training", rate_lambdas=_training_lambdas(payload)))
    keys = load_lalic_state_dict(model.main, payload)
    report = InitReport(str(path), "lalic-official", loaded=len(keys.mapped))
    report.unused = sorted(keys.unexpected + keys.skipped + keys.aliases)
    report.missing = sorted(MAIN_PREFIX + k for k in keys.missing if not k.startswith(REBUILT_PREFIX))
    if not keys.mapped:
        raise ValueError(f"--init: {str(path)!r} is neither an stlic checkpoint nor an official LALIC one "
                         "(no key matched)")
    return report
