"""The model directory: what :meth:`Codec.load` needs and nothing else.

    config.yaml            merged training config (model.params describe the networks)
    embedder.safetensors   VQ embedder weights (encoder, codebook, decoder)
    prior.safetensors      entropy model of the code indices, fitted on the training split
    diffusion.safetensors  latent-diffusion decoder weights (when trained)
    model.json             model_id, downsampling factor, codebook size, file digests
    MODEL_CARD.md          data, training commands, steps, time, metrics

``model_id`` is the first 16 bytes (32 hex digits) of the SHA-256 over the weight files
in name order, so any change of weights or prior gives another id, and decoders refuse
codes made by another model.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch

from rawdiff.config import load_config, save_config
from rawdiff.models.embedder import TRAINING_ONLY_KEYS

WEIGHT_FILES = ("embedder.safetensors", "prior.safetensors", "diffusion.safetensors")


def compute_model_id(model_dir: str) -> str:
    digest = hashlib.sha256()
    for name in WEIGHT_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            digest.update(name.encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:32]


def embedder_state(embedder: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in embedder.state_dict().items()
            if k not in TRAINING_ONLY_KEYS}


def iter_index_frames(index_file: str, limit: Optional[int] = None) -> Iterable:
    """RAW frames listed in an index file (one path a line, relative to the file's folder)."""
    from rawdiff.data.dataset import read_index
    from rawdiff.raw import read_raw

    for path in read_index(index_file)[:limit]:
        yield read_raw(path)


@torch.inference_mode()
def frame_indices(embedder, frame, device: Optional[torch.device] = None) -> np.ndarray:
    from rawdiff.models.embedder import pad_planes
    from rawdiff.raw.isp import model_planes, render_parameters

    gains = render_parameters(frame)["wb_gains"] if embedder.out == "linear" else None
    planes = torch.from_numpy(model_planes(frame, None if gains is None else np.float32(gains)))
    planes = planes[None].to(device or "cpu")
    planes, _ = pad_planes(planes, embedder.plane_multiple)
    return embedder.encode_indices(planes)[0].cpu().numpy()


def fit_prior(embedder, frames: Iterable, n_embed: int, kind: str = "context"):
    from rawdiff.codec.entropy import IndexPrior

    device = next(embedder.parameters()).device
    was_training = embedder.training
    embedder.eval()
    grids = [frame_indices(embedder, f, device) for f in frames]
    embedder.train(was_training)
    if not grids:
        raise ValueError("no training frames to fit the index prior on")
    return IndexPrior.fit(grids, n_embed, kind=kind), grids


def write_model_card(out: str, meta: Dict[str, Any]) -> None:
    lines = ["# rawdiff model %s" % meta["model_id"], ""]
    lines.append("Downsampling factor f%d, %d codes; entropy model: %s."
                 % (meta["factor"], meta["n_embed"], meta.get("prior_kind", "?")))
    train = meta.get("training") or {}
    if train:
        lines += ["", "## Training", "", "```", "rawdiff train --base %s %s" % (
            " ".join(train.get("bases", [])), " ".join(train.get("overrides", []))), "```", ""]
        lines.append("%s steps, %s s wall time on %s x%s."
                     % (train.get("global_step"), train.get("wall_s"), train.get("accelerator"),
                        train.get("devices")))
    if meta.get("encoder_teacher_model_id"):
        lines += ["", "## Encoder", "",
                  "A light encoder trained against the encoder of model %s (rawdiff.models.distill); the "
                  "codebook and decoder%s are that model's." % (meta["encoder_teacher_model_id"],
                                                                 ", and the diffusion decoder," if "diffusion" in meta
                                                                 else "")]
    if "prior" in meta:
        p = meta["prior"]
        lines += ["", "## Index prior (training split)", "",
                  "%d frames, %.3f bits per index (log2 K = %.2f), %d of %d codes used (%.1f %%)."
                  % (p["frames"], p["bits_per_index"], np.log2(meta["n_embed"]), p["codes_used"],
                     meta["n_embed"], 100.0 * p["codes_used"] / meta["n_embed"])]
    with open(os.path.join(out, "MODEL_CARD.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _remove_stale(out: str, names) -> None:
    """Remove files an earlier export left in ``out`` that this export does not write."""
    for name in names:
        path = os.path.join(out, name)
        if os.path.isfile(path):
            os.remove(path)


def export_model(model, cfg: Dict[str, Any], out: str, data=None, training: Optional[Dict] = None,
                 prior_kind: Optional[str] = None, prior_frames: Optional[int] = None) -> str:
    """Write the model directory of a trained embedder (``model.embedder``), or of a latent
    diffusion decoder (``model.is_diffusion``: :func:`export_diffusion_model`)."""
    from safetensors.torch import save_file

    if getattr(model, "is_diffusion", False):
        return export_diffusion_model(model, cfg, out, training=training)
    if hasattr(model, "export_config"):
        cfg = model.export_config(cfg, out)  # the model directory's config differs from the run's
    os.makedirs(out, exist_ok=True)
    _remove_stale(out, ("diffusion.safetensors", "encoder.onnx"))
    embedder = model.embedder
    save_file(embedder_state(embedder), os.path.join(out, "embedder.safetensors"),
              metadata={"format": "rawdiff-embedder-1"})
    codec_cfg = cfg.get("codec") or {}
    prior_kind = prior_kind or codec_cfg.get("prior", "context")
    index = getattr(data, "train_index", None) if data is not None else None
    meta: Dict[str, Any] = {"factor": embedder.factor, "n_embed": embedder.n_embed, "out": embedder.out,
                            "prior_kind": prior_kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "training": training or {}}
    if index and os.path.isfile(index):
        frames = iter_index_frames(index, prior_frames or codec_cfg.get("prior_frames"))
        prior, grids = fit_prior(embedder, frames, embedder.n_embed, prior_kind)
        prior.save(os.path.join(out, "prior.safetensors"))
        used = np.unique(np.concatenate([g.ravel() for g in grids])).size
        meta["prior"] = {"frames": len(grids), "bits_per_index": float(prior.bits_per_index(grids)),
                         "codes_used": int(used)}
    else:
        raise ValueError("the data module has no training index (train_index) to fit the index prior on")
    if hasattr(model, "export_extras"):
        meta.update(model.export_extras(out))  # files carried over from another model directory
    save_config(cfg, os.path.join(out, "config.yaml"))
    meta["model_id"] = compute_model_id(out)
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    write_model_card(out, meta)
    return out


# What a diffusion model directory takes over unchanged from its embedder's directory. Not
# encoder.onnx: model.json vouches for it by model_id, which the diffusion weights change
# (re-export it with `rawdiff export-onnx --model DIR`).
_FROM_EMBEDDER = ("embedder.safetensors", "prior.safetensors")


def export_diffusion_model(model, cfg: Dict[str, Any], out: str, training: Optional[Dict] = None) -> str:
    """Copy the embedder's model directory (``model.embedder_dir``: its weights and prior) to
    ``out`` and add the diffusion decoder: ``diffusion.safetensors`` (``model.diffusion_state()``,
    the EMA weights), the ldm config as the ``diffusion`` node of ``config.yaml`` (the rest stays
    the embedder's, so :meth:`Codec.load` reads it unchanged), and a new ``model_id`` over all
    weight files: bitstreams of the embedder's own directory do not decode here."""
    import shutil

    from safetensors.torch import save_file

    src = os.path.abspath(model.embedder_dir)
    if os.path.abspath(out) == src:
        raise ValueError("diffusion export %s would overwrite the embedder's model directory" % out)
    info = read_model_dir(src)
    os.makedirs(out, exist_ok=True)
    for name in _FROM_EMBEDDER:
        shutil.copy2(os.path.join(src, name), os.path.join(out, name))
    _remove_stale(out, ("encoder.onnx",))
    save_file(model.diffusion_state(), os.path.join(out, "diffusion.safetensors"),
              metadata={"format": "rawdiff-diffusion-1"})
    merged = dict(info["config"])
    merged["diffusion"] = cfg
    save_config(merged, os.path.join(out, "config.yaml"))
    meta = dict(info["meta"])
    meta.pop("onnx", None)
    meta["embedder_model_id"] = info["meta"]["model_id"]
    meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    meta["diffusion"] = dict(model.diffusion_meta(), training=training or {})
    meta["model_id"] = compute_model_id(out)
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    write_model_card(out, meta)
    d = meta["diffusion"]
    train = d["training"]
    lines = ["", "## Diffusion decoder", "",
             "Latent diffusion on the embedder %s (frozen): %s parameters, %s prediction, %d timesteps, "
             "default sampler %s." % (meta["embedder_model_id"], d["parameters"], d["prediction"],
                                      d["num_timesteps"], d["sampler"]),
             "", "The embedder's encoder.onnx is not carried over: `rawdiff export-onnx --model DIR`."]
    if train:
        lines += ["", "```", "rawdiff train --base %s %s" % (" ".join(train.get("bases", [])),
                                                             " ".join(train.get("overrides", []))), "```", "",
                  "%s steps, %s s wall time on %s x%s." % (train.get("global_step"), train.get("wall_s"),
                                                          train.get("accelerator"), train.get("devices"))]
    with open(os.path.join(out, "MODEL_CARD.md"), "a") as f:
        f.write("\n".join(lines) + "\n")
    return out


def read_model_dir(model_dir: str) -> Dict[str, Any]:
    """Check a model directory and return its config and metadata (no weights loaded)."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError("model directory %s does not exist" % model_dir)
    for name in ("config.yaml", "model.json", "embedder.safetensors", "prior.safetensors"):
        if not os.path.isfile(os.path.join(model_dir, name)):
            raise ValueError("model directory %s has no %s" % (model_dir, name))
    with open(os.path.join(model_dir, "model.json")) as f:
        meta = json.load(f)
    actual = compute_model_id(model_dir)
    if meta.get("model_id") != actual:
        raise ValueError("model directory %s: weights do not match model.json (model_id %s, files hash to %s)"
                         % (model_dir, meta.get("model_id"), actual))
    return {"config": load_config(os.path.join(model_dir, "config.yaml")), "meta": meta}
