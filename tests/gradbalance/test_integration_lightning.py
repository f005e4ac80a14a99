"""GradBalanceCallback: a small LightningModule trained a few steps; .grad as a plain weighted backward,
shares logged through Lightning's logger, the Balancer's weights logged and checkpointed."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from gradbalance.integrations.lightning import GradBalanceCallback  # noqa: E402

WEIGHTS = {"fit": 1.0, "side": 0.3}
GROUPS = {"trunk": r"^trunk\.", "head": r"^head\.", "side": r"^side\."}


class Tiny(L.LightningModule):
    def __init__(self, weighted: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.head = nn.Linear(8, 2)
        self.side = nn.Linear(4, 2)
        self.weighted = weighted

    def training_step(self, batch, batch_idx):
        x, y = batch
        losses = {"fit": (self.head(self.trunk(x)) - y).square().mean(), "side": (self.side(x) + self.trunk(x)[:, :2]).abs().mean()}
        return sum(WEIGHTS[k] * v for k, v in losses.items()) if self.weighted else losses

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader():
    torch.manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(24, 4), torch.randn(24, 2))
    return torch.utils.data.DataLoader(data, batch_size=4)


def fit(module, tmp_path, callbacks=(), **options):
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=list(callbacks),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=1, **options)
    trainer.fit(module, loader())
    return trainer


@pytest.mark.parametrize("accumulate", [1, 2])
def test_callback_trains_as_the_weighted_sum_and_logs_shares(tmp_path, accumulate):
    reference = Tiny(weighted=True)
    fit(reference, tmp_path / "ref", accumulate_grad_batches=accumulate)
    module = Tiny(weighted=False)
    callback = GradBalanceCallback(GROUPS, weights=WEIGHTS, every=2)
    trainer = fit(module, tmp_path / "probe", [callback], accumulate_grad_batches=accumulate)
    for p, q in zip(module.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    records = callback.probe.records
    assert sorted(records["step"].unique()) == list(range(0, 4 * accumulate, 2))
    assert ("side", "head") in callback.probe.no_path
    logged = pd.read_csv(next((tmp_path / "probe").rglob("metrics.csv")))
    share = logged["gradbalance/share/fit/trunk"].dropna()
    assert "gradbalance/share/side/head" not in logged.columns  # no path: not logged as 0 %
    assert len(share) == len(records["step"].unique())
    first = callback.probe.history[0]
    assert share.iloc[0] == pytest.approx(100.0 * first.shares()[0, 0], rel=1e-6)
    assert logged["gradbalance/weight/side"].dropna().eq(0.3).all()
    assert module.training_step.__name__ == "training_step" and trainer.state.finished


def test_balancer_weights_are_logged_and_checkpointed(tmp_path):
    module = Tiny(weighted=False)
    callback = GradBalanceCallback(GROUPS, weights=WEIGHTS, every=1, targets={"trunk": {"fit": 50, "side": 50}},
                                   balancer_options={"fixed": ["fit"]})
    trainer = fit(module, tmp_path, [callback])
    assert callback.weights["side"] != 0.3 and callback.weights["fit"] == 1.0
    logged = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    assert logged["gradbalance/weight/side"].dropna().iloc[-1] == pytest.approx(callback.weights["side"], rel=1e-6)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    assert any(state.get("weights") == callback.balancer.weights for state in saved.values())


def test_a_loss_tensor_instead_of_a_dict_is_named(tmp_path):
    with pytest.raises(ValueError, match="training_step returns a dict of unweighted losses"):
        fit(Tiny(weighted=True), tmp_path, [GradBalanceCallback(GROUPS, weights=WEIGHTS)])


def test_sixteen_bit_amp_uses_the_precision_plugins_scaler(tmp_path):
    """16-mixed: the callback's probe scales with Lightning's GradScaler; same training as the plain module."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    def amp():  # Lightning turns precision="16-mixed" into bf16 on CPU; the plugin itself runs fp16 there
        return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))

    reference = Tiny(weighted=True)
    fit(reference, tmp_path / "ref", plugins=[amp()])
    module = Tiny(weighted=False)
    callback = GradBalanceCallback(GROUPS, weights=WEIGHTS, every=2)
    trainer = fit(module, tmp_path / "probe", [callback], plugins=[amp()])
    assert callback.probe.scaler is trainer.precision_plugin.scaler is not None
    for p, q in zip(module.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    fresh = Tiny(weighted=False)  # the first step's norm in float32, without loss scaling
    x, y = next(iter(loader()))
    fit_loss = fresh.training_step((x, y), 0)["fit"]
    expected = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        fit_loss, list(fresh.trunk.parameters()))]))
    first = callback.probe.history[0]  # unscaled by the GradScaler's 2^10
    assert first.raw_norm[0, 0] == pytest.approx(float(expected), rel=1e-2)


class BarrierAtFitEnd(L.Callback):
    """Every rank waits for the others before Lightning tears gloo down: a rank that destroys the
    process group while another is still in a collective aborts it ('terminate called without an
    active exception', SIGABRT; seen once in five suite runs), as in the project's own DDP tests."""

    def on_fit_end(self, trainer, pl_module):
        trainer.strategy.barrier("gradbalance-test-fit-end")


def test_ddp_spawn_trains_as_the_weighted_sum(tmp_path):
    """Two CPU ranks (gloo): probed steps skip DDP's sync and the probe averages; same weights as plain DDP."""
    options = dict(strategy="ddp_spawn", devices=2)
    reference = Tiny(weighted=True)
    fit(reference, tmp_path / "ref", [BarrierAtFitEnd()], **options)
    module = Tiny(weighted=False)
    fit(module, tmp_path / "probe", [GradBalanceCallback(GROUPS, weights=WEIGHTS, every=2), BarrierAtFitEnd()],
        **options)
    untrained = Tiny(weighted=True)
    assert not torch.equal(next(reference.parameters()), next(untrained.parameters()))  # weights came back
    for p, q in zip(module.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
