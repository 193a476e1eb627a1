"""A new encoder for a trained embedder (``target: encoder_distill`` in a config).

The vehicle runs the encoder, the receiving side the decoder, so the two need not have the
same shape: a light encoder can feed the codebook and decoder of a model trained with a
heavy one. This module trains such an encoder against a *teacher* model directory, whose
codebook and decoder it copies and keeps frozen:

    planes --teacher encoder (frozen)------> z_t
    planes --student encoder (trained)-----> z_s --VQ (teacher's codebook)--> z_q --decoder (frozen)--> RGB

    loss = latent_weight * ||n(z_s) - n(z_t)||^2              (n: l2-normalise per position)
         + rec_weight * (L1 + ms_ssim_weight * (1 - MS-SSIM))(RGB, target)  } after rec_start
         + beta * ||n(z_s) - sg(z_q)||^2                      (commitment)  } batches

The latent term alone is cheap (no decoder) and brings the student near the teacher's
codes; the reconstruction term then lets it pick the codes that the decoder renders best,
which need not be the teacher's. Codebook and decoder are unchanged, so the teacher's
diffusion decoder works on the student's codes as it does on the teacher's, and is carried
over to the exported model directory; the index prior is fitted anew (the student's code
statistics differ a little) on the run's data, with the run's ``codec`` settings.

Checkpoints hold the teacher's model_id; resuming against a teacher directory that has
changed since is refused, as is exporting into the teacher's own directory.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from typing import Any, Dict, Optional

import lightning as L
import torch
from torch.nn import functional as F

from rawdiff.config import register
from rawdiff.metrics import psnr
from rawdiff.models.embedder import Embedder, may_be_missing, model_input, rendered, target_of
from rawdiff.models.losses import reconstruction_loss


def _normalized(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(z, dim=1)


def _agreement(codes, reference) -> torch.Tensor:
    """Fraction of code positions equal in both: one grid each, or one per quantizer stage."""
    if isinstance(codes, torch.Tensor):
        codes, reference = [codes], [reference]
    same = sum((a == b).sum() for a, b in zip(codes, reference))
    return same.float() / sum(a.numel() for a in codes)


@register("encoder_distill")
class EncoderDistill(L.LightningModule):
    def __init__(self, teacher: Optional[str] = None, encoder: Optional[Dict[str, Any]] = None,
                 latent_weight: float = 1.0, rec_weight: float = 1.0, ms_ssim_weight: float = 0.5, rec_start: int = 0,
                 learning_rate: float = 1e-3, min_learning_rate: float = 5e-5, decay_batches: int = 0,
                 betas=(0.9, 0.99), init_encoder: Optional[str] = None):
        super().__init__()
        from rawdiff.codec.modeldir import read_model_dir
        from rawdiff.models.decoder_update import embedder_weights
        from rawdiff.models.ldm import load_frozen_embedder

        self.save_hyperparameters()
        if not isinstance(teacher, str) or not teacher:
            raise ValueError("model.params.teacher must be the path of a model directory, got %r" % (teacher,))
        self.teacher_dir = os.path.abspath(teacher)
        info = read_model_dir(self.teacher_dir)
        self.teacher_config = info["config"]
        self.teacher_meta = info["meta"]
        teacher_params = dict(self.teacher_config.get("model", {}).get("params", {}).get("embedder") or {})
        self.teacher = load_frozen_embedder(self.teacher_dir)
        student_params = dict(teacher_params, encoder=dict(encoder or {}))
        self.embedder = Embedder(**student_params)
        self.embedder_params = student_params
        # the teacher's codebook and decoder, frozen; the encoder is the student's own
        state = embedder_weights(self.teacher_dir)
        kept = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        missing, unexpected = self.embedder.load_state_dict(kept, strict=False)
        missing = [k for k in missing if not k.startswith("encoder.") and not may_be_missing(k)]
        if missing or unexpected:
            raise ValueError("teacher %s does not match its config: missing %s, unexpected %s"
                             % (teacher, missing[:5], unexpected[:5]))
        self.init_meta: Optional[Dict[str, Any]] = None
        if init_encoder:
            self._init_encoder(init_encoder)
        self.embedder.quantize.requires_grad_(False)
        self.embedder.decoder.requires_grad_(False)
        self.embedder.quantize.restart_after = 0
        self.latent_weight = latent_weight
        self.rec_weight = rec_weight
        self.ms_ssim_weight = ms_ssim_weight
        self.rec_start = int(rec_start)
        self.learning_rate = learning_rate
        self.min_learning_rate = min_learning_rate
        self.decay_batches = int(decay_batches)
        self.betas = tuple(betas)
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self.freeze_modes()

    def _init_encoder(self, model_dir: str) -> None:
        """Start from the encoder of another model directory with the same codebook (an
        earlier student): its weights where the shapes agree; parts it lacks (e.g. the global
        context branch, zero-initialised) start fresh."""
        from safetensors.torch import load_file

        from rawdiff.codec.modeldir import read_model_dir

        self.init_meta = read_model_dir(model_dir)["meta"]  # a complete, consistent model directory
        state = load_file(os.path.join(model_dir, "embedder.safetensors"))
        own = self.embedder.encoder.state_dict()
        given = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        wrong = sorted(k for k, v in given.items() if k not in own or own[k].shape != v.shape)
        if wrong:
            raise ValueError("init_encoder %s has another encoder shape: %s" % (model_dir, wrong[:5]))
        missing = [k for k in own if k not in given]
        self.embedder.encoder.load_state_dict(given, strict=False)
        print("rawdiff encoder_distill: encoder from %s (%d tensors; new: %s)"
              % (model_dir, len(given), ", ".join(missing) or "none"))

    def freeze_modes(self) -> None:
        """Frozen parts in eval mode: no dead-code restart, no counters. Lightning restores
        the modes it saved around validation rather than calling ``train()``, so this runs at
        the start of every training batch as well."""
        self.teacher.eval()
        self.embedder.quantize.eval()
        self.embedder.decoder.eval()

    def on_train_batch_start(self, batch, batch_idx):
        self.freeze_modes()

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["teacher_model_id"] = self.teacher_meta.get("model_id")

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        saved, now = checkpoint.get("teacher_model_id"), self.teacher_meta.get("model_id")
        if saved and saved != now:
            raise ValueError("checkpoint was trained against teacher model %s, but %s now holds model %s"
                             % (saved, self.teacher_dir, now))

    def train(self, mode: bool = True):
        super().train(mode)
        self.freeze_modes()
        return self

    def losses(self, batch: Dict[str, torch.Tensor], with_rec: bool) -> Dict[str, torch.Tensor]:
        planes = model_input(self.embedder, batch)  # the teacher's domain: the same embedder config
        with torch.no_grad():
            z_t = self.teacher.encode(planes)
            idx_t = self.teacher.quantize.encode_indices(z_t)
        z_s = self.embedder.encode(planes)
        latent = (_normalized(z_s) - _normalized(z_t)).pow(2).sum(1).mean()
        out: Dict[str, torch.Tensor] = {"latent": latent}
        q = self.embedder.quantize
        if with_rec:
            z_q, q_loss, idx, stats = q(z_s)  # codebook frozen: q_loss's gradient is beta * commitment
            x_hat = rendered(self.embedder, self.embedder.decode(z_q), batch)
            rec = reconstruction_loss(x_hat, target_of(self.embedder, batch), 1.0, self.ms_ssim_weight)
            out.update(rec=rec["rec"], q_loss=q_loss, commitment=stats["commitment_loss"], x_hat=x_hat)
            if "ms_ssim" in rec:
                out["ms_ssim"] = rec["ms_ssim"]
        else:
            idx = q.encode_indices(z_s)
        out["agreement"] = _agreement(idx, idx_t)
        out["teacher_indices"] = idx_t
        return out

    def learning_rate_at(self, batch: int) -> float:
        """Cosine from learning_rate to min_learning_rate over decay_batches, then flat."""
        if self.decay_batches <= 0:
            return self.learning_rate
        t = min(1.0, batch / float(self.decay_batches))
        span = self.learning_rate - self.min_learning_rate
        return self.min_learning_rate + 0.5 * span * (1.0 + math.cos(math.pi * t))

    def training_step(self, batch, batch_idx):
        step = int(self.batches_seen)
        self.batches_seen += 1
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = self.learning_rate_at(step)
        out = self.losses(batch, with_rec=step >= self.rec_start and self.rec_weight > 0)
        loss = self.latent_weight * out["latent"]
        if "rec" in out:
            loss = loss + self.rec_weight * out["rec"] + out["q_loss"]
        n = batch["raw"].shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=n)
        self.log("train/agreement", out["agreement"], prog_bar=True, batch_size=n)
        unlogged = ("x_hat", "agreement", "q_loss", "teacher_indices")
        self.log_dict({"train/" + k: v.detach() for k, v in out.items() if k not in unlogged}, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        out = self.losses(batch, with_rec=True)
        target = target_of(self.embedder, batch)
        n = target.shape[0]
        with torch.no_grad():
            teacher_hat = rendered(self.teacher, self.teacher.decode_indices(out["teacher_indices"]), batch,
                                   straight_through=False)
        self.log("val/psnr", psnr(out["x_hat"].clamp(0, 1), target), prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/psnr_teacher", psnr(teacher_hat.clamp(0, 1), target), sync_dist=True, batch_size=n)
        self.log("val/agreement", out["agreement"], sync_dist=True, batch_size=n)
        self.log("val/latent", out["latent"], sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        return torch.optim.Adam(self.embedder.encoder.parameters(), lr=self.learning_rate, betas=self.betas)

    # -- export (rawdiff.export.model_dir.export_model) ----------------------------------

    def export_config(self, cfg: Dict[str, Any], out_dir: str) -> Dict[str, Any]:
        """The model directory's config: the teacher's, with the student's encoder and the run's
        ``data`` and ``codec`` (the prior is fitted on that data); the distillation run's own
        model and trainer config is kept under ``encoder_distill``. Called before anything
        is written to ``out_dir``, which must not be the teacher's directory."""
        if os.path.abspath(out_dir) == self.teacher_dir:
            raise ValueError("the distilled model would overwrite its teacher %s; export elsewhere" % out_dir)
        out = copy.deepcopy(self.teacher_config)
        out.setdefault("model", {}).setdefault("params", {})["embedder"] = copy.deepcopy(self.embedder_params)
        for key in ("data", "codec"):
            if cfg.get(key):
                out[key] = copy.deepcopy(cfg[key])
        out["encoder_distill"] = copy.deepcopy({"model": cfg.get("model"), "data": cfg.get("data"),
                                                "lightning": cfg.get("lightning")})
        return out

    def export_extras(self, out_dir: str) -> Dict[str, Any]:
        """Carry the teacher's diffusion decoder over (same codebook and decoder); metadata."""
        meta: Dict[str, Any] = {"encoder_teacher_model_id": self.teacher_meta.get("model_id"),
                                "encoder_teacher_training": self.teacher_meta.get("training") or {}}
        if self.init_meta is not None:  # the earlier stage this encoder started from
            meta["encoder_init"] = {"model_id": self.init_meta.get("model_id"),
                                    "training": self.init_meta.get("training") or {}}
        src = os.path.join(self.teacher_dir, "diffusion.safetensors")
        if os.path.isfile(src):
            shutil.copy2(src, os.path.join(out_dir, "diffusion.safetensors"))
            if "diffusion" in self.teacher_meta:
                meta["diffusion"] = self.teacher_meta["diffusion"]
        return meta
