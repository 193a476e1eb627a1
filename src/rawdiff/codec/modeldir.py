"""The model directory: what :meth:`Codec.load` needs and nothing else.

    config.yaml            merged training config (model.params describe the networks)
    embedder.safetensors   VQ embedder weights (encoder, codebook, decoder)
    prior.safetensors      entropy model of the code indices, fitted on the training split
    diffusion.safetensors  latent-diffusion decoder weights (when trained)
    encoder.onnx           the vehicle encoder graph (recorded in model.json, not in model_id)
    model.json             model_id, downsampling factor, codebook size, file digests
    MODEL_CARD.md          data, training commands, steps, time, metrics

``model_id`` is the first 16 bytes (32 hex digits) of the SHA-256 over the weight files
in name order, so any change of weights or prior gives another id, and decoders refuse
codes made by another model. This module reads and checks a directory (numpy-free, no
torch: the vehicle reads it too); :mod:`rawdiff.export.model_dir` writes one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict

from rawdiff.config import load_config

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
