"""A saved probe run for the CLI and run-file tests, written without probing (instant).

(A uniquely named module: ``conftest`` is a name every test folder uses.)
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from gradbalance.io.run import save_run


def write_probe_run(folder, steps=4):
    """A probe run as `gradbalance probe` saves it: 3 losses x 2 groups per probed step (the rate
    does not reach the decoder), every step probed."""
    rng = np.random.default_rng(0)
    weights = {"rate": 0.01, "l2": 1.0, "l1": 0.1}
    rows = [{"step": step, "loss": loss, "group": group, "weight": weight, "value": 1.0,
             "norm": np.nan if (loss, group) == ("rate", "decoder") else float(rng.uniform(0.1, 1.0)) * weight,
             "raw_norm": np.nan if (loss, group) == ("rate", "decoder") else 1.0, "precond_norm": np.nan}
            for step in range(steps) for loss, weight in weights.items() for group in ("encoder", "decoder")]
    metadata = {"model": "synthetic", "steps": steps, "every": 1, "loss_order": list(weights),
                "groups": ["encoder", "decoder"]}
    return save_run(folder, pd.DataFrame(rows), pd.DataFrame(), metadata)
