"""Lightning module that trains the VQ-GAN embedder (``target: vqgan`` in a config).

Two optimizers, stepped by hand each batch: the autoencoder + codebook on
:meth:`VQLoss.generator_loss`, then the PatchGAN on :meth:`VQLoss.discriminator_loss`
(only after ``loss.disc_start`` steps).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import lightning as L
import torch

from rawdiff.config import register
from rawdiff.metrics import psnr
from rawdiff.models.embedder import Embedder, may_be_missing, model_input, rendered, target_of
from rawdiff.models.losses import VQLoss


@register("vqgan")
class VQGAN(L.LightningModule):
    def __init__(self, embedder: Optional[Dict[str, Any]] = None, loss: Optional[Dict[str, Any]] = None,
                 learning_rate: float = 2e-4, betas=(0.5, 0.9), init: Optional[str] = None,
                 frozen_codes: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.embedder = Embedder(**(embedder or {}))
        # frozen_codes: the encoder, analysis and codebooks stay as they are (taken over with
        # init) and only the decoder side trains: the bitstream, its operating points and a
        # diffusion decoder trained on these codes stay valid
        self.frozen_codes = bool(frozen_codes)
        if self.frozen_codes:
            if not init:
                raise ValueError("frozen_codes trains the decoder of the codes of a model: it needs init")
            for name, param in self.embedder.named_parameters():
                if name.startswith(("quantize.", "encoder.")):
                    param.requires_grad_(False)
        if init:
            self.init_from(init)
        out_channels = 4 if self.embedder.out == "raw" else 3
        self.loss = VQLoss(out_channels=out_channels, **(loss or {}))
        self.learning_rate = learning_rate
        self.betas = tuple(betas)
        # Batches trained so far. Lightning's global_step counts optimizer steps, whose number
        # per batch depends on the optimizers taking part, so the GAN warm-up counts batches.
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def init_from(self, model_dir: str) -> None:
        """Start from the embedder weights of a model directory (same shapes; the output
        domain may differ: a model trained to sRGB is a good start for ``out: linear``).

        A wider latent (a larger ``embed_dim``) is allowed: the encoder's last conv keeps the
        old channels and starts the new ones at a tenth of their random scale; the decoder's
        first conv keeps the old weights and gives the new channels zero weight. The network
        then starts as the old one, and the new channels are learnt."""
        from rawdiff.codec.modeldir import read_model_dir
        from rawdiff.models.decoder_update import embedder_weights

        read_model_dir(model_dir)  # checks the directory and its model_id
        state = embedder_weights(model_dir)
        own = self.embedder.state_dict()
        # the latent's width, from the first codebook (a plain codebook or stage 1)
        old_dim = next(int(v.shape[1]) for k, v in sorted(state.items())
                       if k.startswith("quantize.") and k.endswith("embedding.weight"))
        new_dim = self.embedder.quantize.embed_dim
        if new_dim != old_dim:
            state = dict(state)
            for key in self._latent_layers():
                if key in state and key in own:
                    state[key] = widened(state[key], own[key], old_dim, new_dim, decoder=key.startswith("decoder."))
        # the quantizer may change (a plain codebook -> residual stages) and a refine head may
        # be new: those start fresh; every other weight must be there with its shape
        fresh = ("quantize.", "refine.")
        # a per-quality synthesis from a shared one: each point starts from it (and is fitted
        # on its codes); from a per-quality one, fitted and trained already, it is kept
        fitted = False
        if self.embedder.per_quality and "synthesis.weight" in state:
            fitted = state["synthesis.weight"].shape == own["synthesis.weight"].shape
            if not fitted:
                state = dict(state)
                for key in ("synthesis.weight", "synthesis.bias"):
                    state[key] = self.embedder.every_point(state[key])
        wrong = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape and not k.startswith(fresh))
        if wrong:
            raise ValueError("init %s: weights of another shape (%s); the embedder config must match"
                             % (model_dir, ", ".join(wrong[:3])))
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing, unexpected = self.embedder.load_state_dict(state, strict=False)
        missing = [k for k in missing if not may_be_missing(k) and not k.startswith(fresh)]
        if missing or unexpected:
            raise ValueError("init %s: embedder weights do not match the config: missing %s, unexpected %s"
                             % (model_dir, sorted(missing)[:3], sorted(unexpected)[:3]))
        if self.embedder.linear_paths and "analysis_weight" in state:  # fitted there: not again
            self.embedder.linear_initialised.fill_(True)
        if fitted:
            self.embedder.synthesis_fitted.fill_(True)
        if self.embedder.staged:  # codebooks taken over are not initialised from data again
            for k in range(len(self.embedder.stages)):
                if "quantize.codebooks.%d.embedding.weight" % k in state:
                    self.embedder.quantize.initialised[k] = True

    def _fit_on_batch(self, fit, planes: torch.Tensor, batch, fitted=()) -> None:
        """Run a least-squares fit of the embedder's linear paths on this batch in float32
        (``Embedder.init_linear_paths`` or ``fit_synthesis``): the synthesis and the ``fitted``
        tensors are process 0's where there are several."""
        from rawdiff.nn.colour import camera_rgb_of

        with torch.autocast(self.device.type, enabled=False):
            fit(planes.float(), camera_rgb_of(batch["rgb"], batch["color_matrix"]))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in list(fitted) + [p.data for p in self.embedder.synthesis.parameters()]:
                torch.distributed.broadcast(t, 0)

    def _latent_layers(self):
        """Names of the weights whose shape follows embed_dim: the encoder's last conv (weight
        and bias) and the decoder's first conv weight."""
        enc = self.embedder.encoder
        if enc is None:
            raise ValueError("this embedder has no encoder network (encoder_network: false): its latent "
                             "is the fitted analysis transform, which cannot be widened")
        last = "encoder." + enc.last_conv_name
        return [last + ".weight", last + ".bias", "decoder.conv_in.weight"]

    def forward(self, planes: torch.Tensor):
        return self.embedder(planes)

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        target = target_of(self.embedder, batch)
        stages = None
        if self.embedder.staged:
            # quantizer dropout: this step decodes a random prefix of the stages, so every
            # operating point of the model is trained
            stages = int(torch.randint(1, len(self.embedder.stages) + 1, ()))
        planes = model_input(self.embedder, batch)
        emb = self.embedder
        if self.frozen_codes:  # no code restarts, cost updates or data initialisation (Lightning
            emb.quantize.eval()  # sets submodules' modes itself, past an override of train())
        if emb.linear_paths and not bool(emb.linear_initialised):
            self._fit_on_batch(emb.init_linear_paths, planes, batch, (emb.analysis_weight, emb.analysis_bias))
        if emb.per_quality and not bool(emb.synthesis_fitted) and bool(emb.quantize.initialised.all()):
            self._fit_on_batch(emb.fit_synthesis, planes, batch)
        x_hat, q_loss, _, stats = self.embedder(planes, stages)
        step = int(self.batches_seen)
        self.batches_seen += 1
        # The networks may run under bf16 autocast (precision: bf16-mixed); the colour stage
        # and MS-SSIM run in float32, where bf16 overflows their powers.
        with torch.autocast(self.device.type, enabled=False):
            x_hat = rendered(self.embedder, x_hat.float(), batch)
            g_loss, logs = self.loss.generator_loss(x_hat, target, q_loss.float(), step, self.embedder.last_layer())
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()

        if step >= self.loss.disc_start and self.loss.disc_factor > 0:
            d_loss, d_logs = self.loss.discriminator_loss(x_hat, target)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
            logs.update(d_logs)
        logs.update(stats)
        if stages is not None:
            logs["stages"] = torch.tensor(float(stages))
        shown = ("rec", "perplexity")
        n = target.shape[0]
        self.log_dict({"train/" + k: v for k, v in logs.items() if k not in shown}, batch_size=n)
        self.log_dict({"train/" + k: logs[k] for k in shown}, prog_bar=True, batch_size=n)

    def validation_step(self, batch, batch_idx):
        target = target_of(self.embedder, batch)
        n = target.shape[0]
        planes = model_input(self.embedder, batch)
        # every operating point of a staged model; the last (all stages) is logged as val/psnr
        counts = range(1, len(self.embedder.stages) + 1) if self.embedder.staged else [None]
        for count in counts:
            x_hat, q_loss, _, stats = self.embedder(planes, count)
            with torch.autocast(self.device.type, enabled=False):
                x_hat = rendered(self.embedder, x_hat.float(), batch, straight_through=False)
                rec = self.loss.reconstruction(x_hat, target)
            value = psnr(x_hat.clamp(0, 1), target)
            if count is not None:
                self.log("val/psnr_q%d" % count, value, sync_dist=True, batch_size=n)
        self.log("val/rec", rec["rec"], prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/psnr", value, sync_dist=True, batch_size=n)
        if "ms_ssim" in rec:
            self.log("val/ms_ssim", rec["ms_ssim"], sync_dist=True, batch_size=n)
        self.log("val/perplexity", stats["perplexity"], sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        params = [p for p in self.embedder.parameters() if p.requires_grad]
        opt_g = torch.optim.Adam(params, lr=self.learning_rate, betas=self.betas)
        opt_d = torch.optim.Adam(self.loss.discriminator.parameters(), lr=self.learning_rate, betas=self.betas)
        return [opt_g, opt_d]


def widened(old: torch.Tensor, new: torch.Tensor, old_dim: int, new_dim: int, decoder: bool) -> torch.Tensor:
    """``old`` (a weight with ``old_dim`` latent channels) inside a tensor shaped as ``new``:
    the decoder's new input channels get zero weight, the encoder's new output channels a
    tenth of ``new``'s random initial values."""
    axis = 1 if decoder else 0
    if new_dim < old_dim or old.shape[axis] != old_dim or new.shape[axis] != new_dim:
        raise ValueError("cannot widen a latent of %d channels to %d (weight of shape %s to %s)"
                         % (old_dim, new_dim, tuple(old.shape), tuple(new.shape)))
    out = torch.zeros_like(new) if decoder else new.detach().clone() * 0.1
    out.narrow(axis, 0, old_dim).copy_(old)
    return out
