"""ST-LIC solver: one training step (:meth:`STLICSolver.run_step`) and the loop around it.

A step (ST-LIC, Sec. III; QVRF variable rate; HiFiC-style conditional GAN):

1. draw ``ln lambda ~ U(ln lo, ln hi)``, ``level = model.level_for_lambda(lambda)``;
2. forward, the six unweighted losses of :class:`STLICObjective` and their weights;
3. ``backward(losses, weights)`` (default ``sum_k w_k L_k``), non-finite check, clip, AdamW step
   over ``model.main`` + ``model.refiner`` (entropy-bottleneck quantiles excluded);
4. aux step: quantiles on ``model.aux_loss()`` (CompressAI);
5. ``discriminator.updates_per_step`` discriminator steps on the detached refiner output vs the
   real batch, conditioned on the detached ``y_hat`` (skipped before ``schedule.adversarial_start``;
   R1 on real images every ``r1_every`` steps when ``r1_gamma > 0``).

``arrangement: coupled`` (ablation) runs the same step with the refiner skipped: the perceptual
losses and D see the decoder output ``x_hat``, and the refiner is not trained.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from stlic.checkpoints import atomic_torch_save
from stlic.training.balancing import TrainingBalancer
from stlic.training.checkpoint import (CHECKPOINT_NAME, MODEL_NAME, capture_rng_state, check_data_stream, export_model,
                                       load_checkpoint, load_fields, restore_rng_state, seed_everything)
from stlic.training.config import LOSS_NAMES, TrainConfig
from stlic.training.data import ImageFolder, ResumableSampler, default_data_sources, make_loader
from stlic.training.distributed import (DistributedContext, all_reduce_grads, all_reduce_mean, any_rank,
                                       average_gradients_in_backward, wrap_ddp)
from stlic.training.logging import RunLogger
from stlic.training.finite import (DeferredFiniteCheck, NonFiniteLossError, check_finite_losses,
                                   clip_and_check_gradients)
from stlic.training.objective import STLICObjective, weighted_total
from stlic.training.outputs import DISCRIMINATOR_HEALTH, StepOutput
from stlic.training.schedule import discriminator_learning_rate, learning_rate, sample_rate_lambda, stage_at

BackwardFn = Callable[[Mapping[str, Tensor], Mapping[str, float]], object]
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Mean-squared-error PSNR in dB of [0, 1] images: ``10 log10(1 / MSE)`` over the batch (0-dim tensor)."""
    mse = torch.mean((x.detach().float().clamp(0, 1) - y.detach().float()) ** 2)
    return -10 * torch.log10(mse.clamp_min(1e-10))


class STLICSolver:
    """Trains ST-LIC (LALIC + UNet refiner + latent-conditioned discriminator).

    Args:
        config: the validated training config.
        device: "cpu" or "cuda[:i]".
        out_dir: run folder for logs and checkpoints (None: nothing is written).
        data: image folders overriding every stage's ``data`` (None: the stage's, else default).
        context: DDP rank / world size (default: single process).
        channels_last: images and convolution weights in channels-last memory format (None: on
            CUDA only; on the CPU it measured no faster).
        compile: run the network's forward through ``torch.compile`` (off by default; see
            ``benchmarks/gpu_check.py`` for whether it pays on CUDA). It does not pay on the CPU:
            with torch 2.14.1 inductor failed on the dynamic shapes ("cannot determine truth value
            of Relational"), and with ``dynamic=False`` the first step took 272 s and later steps
            ran 1.86x slower than eager (batch 8, 128 px, tiny; the rate level, a Python float
            drawn per batch, is specialised). The perceptual losses are mostly oneDNN convolutions
            now (``benchmarks/phase2_step.py``), which compiling does not speed up.
    """

    def __init__(self, config: TrainConfig, device: str | torch.device = "cpu", out_dir: str | Path | None = None,
                 data: Sequence[str | Path] | None = None, context: DistributedContext | None = None,
                 channels_last: bool | None = None, compile: bool = False) -> None:
        from stlic.layers.discriminator import LatentConditionedDiscriminator
        from stlic.losses import AdversarialLoss
        from stlic.registry import get_model

        self.config, self.device = config, torch.device(device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.context = context or DistributedContext()
        self.data = [Path(p) for p in data] if data else None
        seed_everything(config.seed)
        self.model_config = config.model_config()
        self.model = get_model("stlic", self.model_config).to(self.device)
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        optim = config.optim
        discriminator = LatentConditionedDiscriminator(
            latent_channels=self.model_config.latent_channels, base_channels=config.discriminator.base_channels,
            n_layers=config.discriminator.n_layers, spectral_norm=config.discriminator.spectral_norm).to(self.device)
        average_gradients_in_backward(discriminator, self.context)
        self.adversarial = AdversarialLoss(
            discriminator,
            lambda params: torch.optim.AdamW(params, lr=optim.disc_lr, betas=optim.disc_betas,
                                             weight_decay=optim.disc_weight_decay, fused=True))
        self.perceptual = config.phase == "stlic"  # phase "rd": main network alone, rate + l2 + l1
        self.refine = self.perceptual and config.arrangement == "semi_decoupled"  # coupled: no refiner
        self.objective = STLICObjective(config.loss_weights, config.perceptual, self.adversarial,
                                        perceptual_on=self.perceptual,
                                        refined_distortion=config.refined_distortion).to(self.device)
        main = [(f"main.{n}", p) for n, p in self.model.main.named_parameters() if not n.endswith("quantiles")]
        if config.freeze_main:  # post-filter training: the codec stays as --init loaded it
            self.model.main.requires_grad_(False)
        self.trained = [] if config.freeze_main else main
        refiner = [(f"refiner.{n}", p) for n, p in self.model.refiner.named_parameters()]
        self.trained += refiner if self.refine else []
        self.quantiles = [(n, p) for n, p in self.model.named_parameters() if n.endswith("quantiles")]
        # fused: one kernel for all parameters (CPU and CUDA); 5x faster than the per-tensor loop on the tiny model
        self.optimizer = torch.optim.AdamW([p for _, p in self.trained], lr=optim.lr, betas=optim.betas,
                                           weight_decay=optim.weight_decay, fused=True)
        self.aux_optimizer = torch.optim.Adam([p for _, p in self.quantiles], lr=optim.aux_lr)
        frozen = [n for n, _ in self.quantiles] + ([] if self.refine else [n for n, _ in refiner]) \
            + ([n for n, _ in main] if config.freeze_main else [])
        self.network = wrap_ddp(self.model, self.context, ignore=frozen)
        if compile:
            self.network = torch.compile(self.network)
        self._deferred = DeferredFiniteCheck()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.balancing = None if config.balancer is None else TrainingBalancer(
            config.balancer, config.loss_weights, self.model, self.optimizer, self.scaler, self.context.is_main,
            refine=self.refine)
        self.lambda_generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.train_seconds = 0.0  # wall-clock seconds spent in fit(), carried across resumes
        self._stream: tuple[int, int] = (0, 0)  # (stage index, batches drawn in that stage)
        self._batches: Iterator[Tensor] | None = None

    # ----------------------------------------------------------------- one step
    def run_step(self, batch: Tensor, backward: BackwardFn | None = None, read: bool = True) -> StepOutput | None:
        """Train on ``batch`` (B, 3, H, W) in [0, 1]; ``backward(losses, weights)`` fills ``.grad``.

        ``read=True``: checks every value on the host (naming a non-finite loss or parameter;
        also the unread steps before it) and returns the step's :class:`StepOutput`.
        ``read=False``: no host synchronisation at all: finiteness is recorded on the device
        for the next reading step, and None is returned (:meth:`fit` reads on logging and
        checkpoint steps only).
        """
        if backward is not None and self.scaler.is_enabled():
            raise ValueError("a custom backward cannot be combined with fp16 loss scaling; use fp32 or bf16")
        if read:
            self.check_finite()
        config, step = self.config, self.step
        x = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.model.train()
        lr = learning_rate(config.optim, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for group in self.adversarial.optimizer.param_groups:
            group["lr"] = discriminator_learning_rate(config.optim, step)
        lambda_rate = sample_rate_lambda(*config.loss_weights.rate, self.lambda_generator)
        level = self.model.level_for_lambda(lambda_rate)
        adversarial_on = self.perceptual and step >= config.schedule.adversarial_start
        # a custom backward (the probe) does not go through DDP's reducer: the gradients are averaged below;
        # the balancer's probed steps do the same
        reducer_off = backward is not None and self.context.enabled
        probing = self.balancing.no_sync_if_probing(self.network) if self.balancing and not backward else None
        no_sync = self.network.no_sync() if reducer_off else probing
        with self._autocast(network=True), no_sync or contextlib.nullcontext():
            output = self.network(x, level=level, refine=self.refine,
                                  main_grad_scale=config.main_perceptual_scale)
        with self._autocast():  # VGG trunk and discriminator in bf16; the objective keeps rate, L1/L2 and WD in fp32
            losses = self.objective(x, output)
        weights = self.objective.weights(lambda_rate, adversarial_on)
        if self.balancing is not None:
            weights = self.balancing.weights(weights)
        if read:
            self._check_losses(losses, weights, step + 1)  # 1-based, as in the logs

        self.optimizer.zero_grad(set_to_none=True)
        (backward or self._default_backward)(losses, weights)
        if reducer_off:  # exact no-op for gradients the backward already averaged over ranks
            all_reduce_grads([p for _, p in self.trained], self.context)
        self.scaler.unscale_(self.optimizer)
        grad_norm = clip_and_check_gradients(self.trained, config.optim.grad_clip, step + 1, check=read) \
            if not self.scaler.is_enabled() else self._clip_scaled(read)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._aux_step()
        disc = self._discriminator_step(x, output) if adversarial_on else None
        self.step += 1
        if not read:
            self._deferred.record(self.step, losses, weights, grad_norm if not self.scaler.is_enabled() else None)
            return None

        scalars = {f"loss/{k}": v.detach().float() for k, v in losses.items()}
        scalars.update(psnr_decoded=psnr(output.x_hat, x), psnr_refined=psnr(output.x_refined, x))
        if disc is not None:
            scalars.update({f"disc/{name}": value for name, value in disc._asdict().items() if value is not None})
        values = torch.stack([torch.as_tensor(v, device=self.device).float().reshape(()) for v in scalars.values()])
        scalars = dict(zip(scalars, values.tolist()))  # one device-to-host transfer
        scalars = all_reduce_mean(scalars, self.context, self.device)
        mean_losses = {name: scalars[f"loss/{name}"] for name in LOSS_NAMES}
        return StepOutput(
            step=self.step, losses=mean_losses, weights=weights,
            total=sum(weights[k] * mean_losses[k] for k in LOSS_NAMES), lambda_rate=lambda_rate, level=level,
            bpp=mean_losses["rate"], psnr_decoded=scalars["psnr_decoded"], psnr_refined=scalars["psnr_refined"],
            gen_loss=mean_losses["adversarial"], disc_loss=scalars.get("disc/loss"),
            d_real=scalars.get("disc/d_real"), d_fake=scalars.get("disc/d_fake"), grad_norm=grad_norm, lr=lr,
            discriminator={k: scalars[f"disc/{k}"] for k in DISCRIMINATOR_HEALTH} if disc is not None else None,
            balance=self.balancing.scalars() if self.balancing is not None else None)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if an unread step had a non-finite value (agreed over ranks)."""
        error = self._deferred.first_error()
        if any_rank(error is not None, self.context, self.device):
            raise NonFiniteLossError(error or "a loss or gradient was not finite on another rank")

    def _check_losses(self, losses: Mapping[str, Tensor], weights: Mapping[str, float], step: int) -> None:
        """Non-finite loss check, agreed over DDP ranks (a rank raising alone would hang the others)."""
        try:
            check_finite_losses(losses, weights, step)
        except NonFiniteLossError:
            any_rank(True, self.context, self.device)
            raise
        if any_rank(False, self.context, self.device):
            raise NonFiniteLossError(f"a loss is not finite on another rank at step {step}")

    def _autocast(self, network: bool = False) -> contextlib.AbstractContextManager:
        """The config's autocast; ``network=True`` (the codec's forward): not on the CPU.

        On the CPU the main network and the tiny refiner gain nothing from bf16 (measured 0.86x
        and 1.19x, ``benchmarks/phase2_step.py``) and bf16 transforms moved the decoder's PSNR
        by 0.2 dB within four steps, so there only the VGG trunk and the discriminator, which
        carry the convolutions' cost, run in bf16.
        """
        dtype = _AUTOCAST_DTYPES.get(self.config.precision)
        if dtype is None or (network and self.device.type == "cpu"):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _default_backward(self, losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> None:
        if self.balancing is not None:
            self.balancing.backward(losses, weights)
        else:
            self.scaler.scale(weighted_total(losses, weights)).backward()

    def _clip_scaled(self, read: bool = True) -> float | Tensor:
        """fp16: inf/NaN gradients are expected occasionally; GradScaler skips those steps."""
        max_norm = self.config.optim.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in self.trained], max_norm)
        return float(norm) if read else norm

    def _aux_step(self) -> None:
        if self.config.freeze_main:  # the quantiles stay as loaded too
            return
        self.aux_optimizer.zero_grad(set_to_none=True)
        self.model.aux_loss().backward()
        all_reduce_grads([p for _, p in self.quantiles], self.context)
        self.aux_optimizer.step()

    def _discriminator_step(self, x: Tensor, output):
        """``updates_per_step`` D updates on this batch; returns the first (its logits are those the
        generator step saw). R1 weight ``gamma * r1_every`` on every ``r1_every``-th step (lazy).
        Under ``precision: bf16`` D runs in bf16 autocast too; not under fp16, whose D gradients no
        GradScaler guards."""
        section = self.config.discriminator
        lazy = section.r1_gamma > 0 and self.step % section.r1_every == 0
        r1_weight = section.r1_gamma * section.r1_every if lazy else 0.0
        fake, latent = output.x_refined.detach().float(), output.y_hat.detach().float()
        with self._autocast() if self.config.precision == "bf16" else contextlib.nullcontext():
            first = self.adversarial.train_adv(fake, x, latent, r1_weight=r1_weight)
            for _ in range(section.updates_per_step - 1):
                self.adversarial.train_adv(fake, x, latent, r1_weight=r1_weight)
        return first

    # ----------------------------------------------------------------- loop
    def fit(self, steps: int | None = None) -> StepOutput | None:
        """Train until step ``steps`` (default: the schedule's total); log, checkpoint, return the last step.

        Records go to ``RUN/train_log.jsonl`` / TensorBoard every ``log_every`` steps and a
        checkpoint every ``checkpoint_every`` steps and at the end. A
        :class:`NonFiniteLossError` propagates without overwriting the last good checkpoint.
        """
        from tqdm import tqdm

        import time

        total = self.config.schedule.total_steps if steps is None else steps
        started, seconds_before = time.perf_counter(), self.train_seconds
        writes = self.out_dir is not None and self.context.is_main
        logger = RunLogger(self.out_dir, resume_step=self.step) if writes else None
        progress = tqdm(total=total, initial=self.step, disable=not writes, desc="train", dynamic_ncols=True)
        last = None
        try:
            while self.step < total:
                next_step = self.step + 1  # read (host sync) on logging and checkpoint steps and the last one
                read = (next_step % self.config.log_every == 0 or next_step % self.config.checkpoint_every == 0
                        or next_step == total)
                output = self.run_step(self.next_batch(), read=read)
                self.train_seconds = seconds_before + time.perf_counter() - started
                progress.update(1)
                if output is None:
                    continue
                last = output
                progress.set_postfix(loss=f"{last.total:.4f}", bpp=f"{last.bpp:.3f}", psnr=f"{last.psnr_decoded:.2f}")
                if logger is not None and self.step % self.config.log_every == 0:
                    logger.log(last, elapsed_s=round(self.train_seconds, 3))
                if self.step % self.config.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            progress.close()
            if logger is not None:
                logger.close()
        if last is not None and self.step % self.config.checkpoint_every:
            self.save_checkpoint()
        return last

    # ----------------------------------------------------------------- data
    def next_batch(self) -> Tensor:
        """Next training batch of the current stage (patch size and data of the stage)."""
        at = stage_at(self.config.schedule, self.step)
        stage_index, drawn = self._stream
        if self._batches is None or stage_index != at.index:
            if stage_index != at.index:
                stage_index, drawn = at.index, 0
            sources = self.data or list(at.stage.data) or default_data_sources()
            dataset = ImageFolder(sources, at.stage.patch_size, self.config.schedule.small_images,
                                  strict=self.config.schedule.strict_data)
            sampler = ResumableSampler(len(dataset), self.config.seed, stream=stage_index, rank=self.context.rank,
                                       world_size=self.context.world_size, start=drawn * self.config.batch_size)
            self._batches = make_loader(dataset, self.config.batch_size, sampler, self.config.num_workers)
        self._stream = (stage_index, drawn + 1)
        return next(self._batches)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything an exact resume needs (loadable with ``weights_only=True``)."""
        return {
            "step": self.step, "config": self.config.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "aux_optimizer": self.aux_optimizer.state_dict(),
            "adversarial": self.adversarial.state_dict(),  # discriminator + its optimizer
            "scaler": self.scaler.state_dict(),
            "lambda_generator": self.lambda_generator.get_state(),
            "data_stream": list(self._stream), "rng": capture_rng_state(), "train_seconds": self.train_seconds,
            **({"balancer": self.balancing.state_dict()} if self.balancing is not None else {}),
        }

    def load_state_dict(self, state: Mapping, source: str | Path | None = None) -> None:
        """Restore :meth:`state_dict`; a field that does not fit is an error naming ``source`` and the field."""
        def stream(value) -> None:
            self._stream, self._batches = check_data_stream(value), None

        def scaler(value) -> None:  # a disabled GradScaler (fp32) accepts anything: check the kind here
            if not isinstance(value, Mapping):
                raise TypeError(f"expected a mapping, got {type(value).__name__}")
            self.scaler.load_state_dict(value)

        loaders = [("model", self.model.load_state_dict), ("optimizer", self.optimizer.load_state_dict),
                   ("aux_optimizer", self.aux_optimizer.load_state_dict),
                   ("adversarial", self.adversarial.load_state_dict), ("scaler", scaler),
                   ("lambda_generator", self.lambda_generator.set_state), ("data_stream", stream),
                   ("step", lambda value: setattr(self, "step", int(value))), ("rng", restore_rng_state)]
        def seconds(value) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"expected a number of seconds >= 0, got {value!r}")
            self.train_seconds = float(value)

        loaders.append(("train_seconds", seconds))
        state = {"train_seconds": 0.0, **state}  # absent in checkpoints written before it was logged
        if self.balancing is not None and "balancer" in state:
            loaders.append(("balancer", self.balancing.load_state_dict))
        load_fields(state, loaders, source)

    def save_checkpoint(self) -> Path | None:
        """Atomically write ``RUN/checkpoint.pt`` and ``RUN/model.pt`` (rank 0 only; None when nothing
        is written); ``model.pt`` is the inference model of that step, for ``stlic eval`` / ``compress``."""
        self.check_finite()  # never save weights an unread non-finite step has spoilt
        if self.out_dir is None or not self.context.is_main:
            return None
        if self.balancing is not None:
            self.balancing.save(self.out_dir / "balancer")
        path = atomic_torch_save(self.state_dict(), self.out_dir / CHECKPOINT_NAME)
        export_model(self.model, self.model_config, self.out_dir / MODEL_NAME,
                     extra={"step": self.step, "train_config": self.config.to_dict()})
        return path

    def resume(self, path: str | Path | None = None) -> int:
        """Load ``path`` (default ``RUN/checkpoint.pt``); returns the step training continues from."""
        source = path if path is not None else self.out_dir
        if source is None:
            raise ValueError("resume needs a checkpoint path or an out_dir")
        path = Path(source) / CHECKPOINT_NAME if Path(source).is_dir() else source
        self.load_state_dict(load_checkpoint(source, map_location=self.device), source=path)
        return self.step
