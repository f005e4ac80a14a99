"""export_config: write derived loss coefficients into a copy of a training YAML.

The base file's loss-weight block (``loss_weights:`` by default; a dotted path such as
``train.loss_weights`` reaches a nested block) gets the new values; everything else is kept.
The output is written atomically (temporary file + rename) and reads back exactly
(``yaml.safe_load(out)`` equals the base with the new coefficients). Comments of the base file are
not preserved; a header comment records where the numbers came from.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import yaml

from gradbalance.io.atomic import atomic_write_text

if TYPE_CHECKING:  # annotations only: gradbalance.io imports nothing of the probe or the math at run time
    from gradbalance.functional.derive import Coefficient, DerivedCoefficients

DEFAULT_BLOCK = "loss_weights"


def load_yaml_mapping(path: Union[str, Path]) -> dict:
    """A YAML file whose top level is a mapping (clear error otherwise)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"YAML file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from None
    except OSError as error:
        raise OSError(f"cannot read {path}: {error.strerror or error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def loss_weight_block(config: dict, block: str = DEFAULT_BLOCK, source: str = "config") -> dict:
    """The (possibly nested, dotted path) loss-weight block of a loaded config."""
    node = config
    for key in block.split("."):
        if not isinstance(node, dict) or key not in node:
            have = list(node) if isinstance(node, dict) else type(node).__name__
            raise KeyError(f"{source} has no loss-weight block {block!r} (missing {key!r}; have {have})")
        node = node[key]
    if not isinstance(node, dict):
        raise ValueError(f"{source}: block {block!r} must be a mapping of loss -> weight")
    return node


def _plain(value: "Coefficient") -> Union[float, list[float]]:
    if isinstance(value, (tuple, list)):
        return [float(v) for v in value]
    return float(value)


def export_config(coefficients: Union["DerivedCoefficients", Mapping[str, "Coefficient"]],
                  base_yaml: Union[str, Path], out_yaml: Union[str, Path], *,
                  block: str = DEFAULT_BLOCK, header: Optional[str] = None) -> Path:
    """Copy ``base_yaml`` to ``out_yaml`` with ``coefficients`` written into its loss-weight block.

    Every coefficient must name an existing key of the block, and a range (``[lo, hi]``) must stay a
    range. Returns the output path.
    """
    if not isinstance(coefficients, Mapping):  # a DerivedCoefficients
        coefficients = coefficients.coefficients
    config = load_yaml_mapping(base_yaml)
    weights = loss_weight_block(config, block, source=str(base_yaml))
    for loss, value in coefficients.items():
        if loss not in weights:
            raise KeyError(f"{base_yaml}: block {block!r} has no key {loss!r} (keys: {list(weights)})")
        if isinstance(weights[loss], list) != isinstance(value, (tuple, list)):
            raise ValueError(f"{loss!r}: base value {weights[loss]!r} and new value {value!r} differ in form "
                             "(a [lo, hi] range must stay a range)")
        weights[loss] = _plain(value)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Loss weights derived by gradbalance on {stamp} from base {base_yaml}."]
    lines += (header or "").splitlines()
    text = "".join(f"# {line}\n" for line in lines)
    text += yaml.safe_dump(config, sort_keys=False, default_flow_style=None, allow_unicode=True)
    return atomic_write_text(out_yaml, text)
