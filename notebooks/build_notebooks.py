"""Regenerate the notebooks of this folder from their cell sources (run: python notebooks/build_notebooks.py).

Keeping the sources here makes notebook diffs reviewable; the .ipynb files are committed without
outputs and run headless (tests/test_notebooks.py executes them on a tiny run).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}

SETUP = """import os
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

# repository root (the notebooks live in notebooks/); papermill-style parameters come from the environment
ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
"""

CONTRIBUTION_TABLES = [
    new_markdown_cell(
        "# Contribution tables (ST-LIC, Table I)\n\n"
        "Loads a `gradbalance probe` run and shows each loss's share of the gradient reaching each "
        "module group: the table, a heatmap, the shares over training steps, and the raw shares next to the "
        "optimizer-aware shares (each loss's share of the Adam-preconditioned update, "
        "`g / (sqrt(v_hat) + eps)`).\n\n"
        "Set `GRADBALANCE_RUN` to a run folder (default: `reports/table1`, written by "
        "`gradbalance probe --model stlic --steps 500`)."),
    new_code_cell(SETUP + """
from gradbalance.report.plots import plot_heatmap, plot_shares_over_steps
from gradbalance.io.run import ProbeRun, latest_run

RUN = latest_run(os.environ.get("GRADBALANCE_RUN", ROOT / "reports" / "table1"))  # a run, or the newest in a folder
run = ProbeRun.load(RUN)
print(f"{RUN}: {run.records['step'].nunique()} probed steps, losses {run.metadata.get('loss_order')}, "
      f"groups {run.metadata.get('groups')}")"""),
    new_markdown_cell("## The table (mean ± std of per-step shares, `-` where a loss does not reach a group)"),
    new_code_cell("""table = run.table()
display(Markdown(table.to_markdown()))"""),
    new_markdown_cell("## Heatmap and shares over steps"),
    new_code_cell("""OUT = Path(os.environ.get("NOTEBOOK_OUT", RUN))
OUT.mkdir(parents=True, exist_ok=True)
heatmap = plot_heatmap(table, OUT / "nb_heatmap.png")
over_steps = plot_shares_over_steps(run.records, OUT / "nb_shares_over_steps.png",
                                    loss_order=table.losses, group_order=table.groups)
from IPython.display import Image
display(Image(filename=str(heatmap)), Image(filename=str(over_steps)))"""),
    new_markdown_cell("## Raw vs optimizer-aware shares\n\nA loss with a small raw share can still move "
                      "the weights it alone reaches: Adam divides each coordinate by its own gradient scale."),
    new_code_cell("""if run.has_precond:
    precond = run.table(precond=True)
    side_by_side = pd.concat({"raw": table.to_frame(), "optimizer-aware": precond.to_frame()}, axis=1)
    display(side_by_side)
else:
    print("this run has no optimizer-aware norms (the target's optimizer is not Adam/AdamW)")"""),
]

TRAINING_DYNAMICS = [
    new_markdown_cell(
        "# Training dynamics (ST-LIC, Fig. 2)\n\n"
        "Reads a `stlic train` run's `train_log.jsonl`: the smoothed generator and discriminator losses "
        "against the `ln 2 = 0.693` equilibrium of the non-saturating GAN, and the rate / distortion "
        "curves.\n\nSet `STLIC_RUN` to a training run folder (default: `runs/tiny`)."),
    new_code_cell(SETUP + """
from stlic.training.dynamics import EQUILIBRIUM, dynamics_curves
from stlic.training.logging import read_log

RUN = Path(os.environ.get("STLIC_RUN", ROOT / "runs" / "tiny"))
log = pd.DataFrame(read_log(RUN))
SMOOTH = int(os.environ.get("SMOOTH", max(1, len(log) // 20)))
print(f"{RUN}: {len(log)} logged steps, smoothing window {SMOOTH}")
log.tail()"""),
    new_markdown_cell("## Adversarial losses vs the 0.693 equilibrium"),
    new_code_cell("""curves = dynamics_curves(RUN, smooth=SMOOTH)
fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.plot(curves.steps, curves.generator, label="$L_G$")
ax.plot(curves.steps, curves.discriminator, label="$L_D$")
ax.axhline(EQUILIBRIUM, color="gray", linestyle="--", label="ln 2")
ax.set_xlabel("step"); ax.set_ylabel("loss"); ax.legend(); ax.grid(alpha=0.3)
plt.show()"""),
    new_markdown_cell("## Rate and distortion"),
    new_code_cell("""fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
log.plot(x="step", y="bpp", ax=axes[0], title="rate (bpp)", legend=False)
log.plot(x="step", y=["psnr_decoded", "psnr_refined"], ax=axes[1], title="PSNR (dB)")
log.plot(x="step", y=[f"weighted/{k}" for k in ("rate", "l2", "l1", "lpips", "wasserstein", "adversarial")],
         ax=axes[2], title="weighted losses", logy=True)
fig.tight_layout()
plt.show()"""),
]

DERIVE = [
    new_markdown_cell(
        "# Deriving loss coefficients from a probe run\n\n"
        "`derive_coefficients` scales each loss so that its gradient share in every group it reaches "
        "matches a target (the paper's Table I shares, `equal`, or min/max bounds), solving all groups jointly "
        "in log space; `export_config` writes the result into a training config that `stlic train` accepts.\n\n"
        "Set `GRADBALANCE_RUN` (default `reports/table1`) and `DERIVED_OUT` (default "
        "`configs/derived/notebook.yaml`)."),
    new_code_cell(SETUP + """
import yaml

from gradbalance import derive_coefficients, export_config
from gradbalance.io.run import ProbeRun, latest_run

RUN = latest_run(os.environ.get("GRADBALANCE_RUN", ROOT / "reports" / "table1"))  # a run, or the newest in a folder
OUT = Path(os.environ.get("DERIVED_OUT", ROOT / "configs" / "derived" / "notebook.yaml"))
BASE = Path(os.environ.get("BASE_CONFIG", ROOT / "configs" / "stlic_probe_cpu.yaml"))
run = ProbeRun.load(RUN)
table = run.table()
display(Markdown(table.to_markdown()))"""),
    new_markdown_cell("## Equal shares in every group"),
    new_code_cell("""base_weights = yaml.safe_load(BASE.read_text())["loss_weights"]
current = {k: tuple(v) if isinstance(v, list) else v for k, v in base_weights.items() if k in table.losses}
equal = derive_coefficients(table, "equal", current=current)
print("residual (rms log-share):", round(equal.residual, 4), " max miss (pp):", round(equal.max_error, 3))
display(pd.DataFrame({"measured with": pd.Series(current), "derived": pd.Series(equal.coefficients)}))
display(equal.predicted.round(1))"""),
    new_markdown_cell("## Bounds: every loss between 5% and 60% of each group it reaches"),
    new_code_cell("""bounded = derive_coefficients(table, {loss: (5.0, 60.0) for loss in table.losses}, current=current)
display(bounded.predicted.round(1))"""),
    new_markdown_cell("## Export a training config"),
    new_code_cell("""path = export_config(equal, BASE, OUT)
print(path.read_text()[:600])
reloaded = yaml.safe_load(path.read_text())["loss_weights"]
assert all(abs((reloaded[k][0] if isinstance(reloaded[k], list) else reloaded[k])
               - (v[0] if isinstance(v, tuple) else v)) < 1e-9 for k, v in equal.coefficients.items())"""),
]


def main() -> None:
    for name, cells in (("contribution_tables", CONTRIBUTION_TABLES), ("training_dynamics", TRAINING_DYNAMICS),
                        ("derive_coefficients", DERIVE)):
        notebook = new_notebook(cells=cells, metadata={"kernelspec": KERNEL,
                                                       "language_info": {"name": "python"}})
        nbformat.write(notebook, HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
