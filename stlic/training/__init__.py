"""ST-LIC training: config, data, solver, checkpoints, DDP and logs (see docs/architecture.md)."""
from stlic.training.config import LOSS_NAMES, ConfigError, TrainConfig, load_config
from stlic.training.finite import NonFiniteLossError
from stlic.training.outputs import StepOutput
from stlic.training.solver import STLICSolver

__all__ = ["LOSS_NAMES", "ConfigError", "NonFiniteLossError", "STLICSolver", "StepOutput", "TrainConfig",
           "load_config"]
