"""The model directory: what :meth:`Codec.load` needs and nothing else.

    config.yaml            merged training config (model.params describe the networks)
    embedder.safetensors   VQ embedder weights (encoder, codebook, decoder)
    prior.safetensors      entropy model of the code indices, fitted on the training split
    means.safetensors      the mean layers (rawdiff.codec.cell_means), when the model has them
    diffusion.safetensors  latent-diffusion decoder weights (when trained)
    decoder_update.safetensors
                           the decoder side as 8-bit differences from embedder.safetensors, when it
                           was trained on after the codes (rawdiff.models.decoder_update)
    texture.safetensors    the texture stage of the realism path (rawdiff.models.texture), when
                           fitted; decoder-side only: its digest and settings are in model.json's
                           ``texture``, not in model_id, so adding it keeps streams decodable
    encoder.onnx           the vehicle encoder graph (recorded in model.json, not in model_id)
    model.json             model_id, downsampling factor, codebook size, file digests
    MODEL_CARD.md          data, training commands, steps, time, metrics

``model_id`` is the first 16 bytes (32 hex digits) of the SHA-256 over the weight files
in the order of ``WEIGHT_FILES``, so any change of weights or prior gives another id, and decoders refuse
codes made by another model. This module reads and checks a directory (numpy-free, no
torch: the vehicle reads it too) and sets one entry of its model.json (:func:`set_model_entry`:
the decoder-side stages and the measured operating points); :mod:`rawdiff.export.model_dir`
writes a whole one.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from typing import Any, Dict, Optional

from rawdiff.config import load_config
from rawdiff.outputs import write_text

#: the decoder side as differences from embedder.safetensors (rawdiff.models.decoder_update)
DECODER_UPDATE_FILE = "decoder_update.safetensors"
WEIGHT_FILES = ("embedder.safetensors", "prior.safetensors", "diffusion.safetensors", "means.safetensors",
                DECODER_UPDATE_FILE)
#: the texture stage's network (not in model_id; model.json's ``texture`` has its digest)
TEXTURE_FILE = "texture.safetensors"
#: the latent-diffusion decoder's weights (one of WEIGHT_FILES, when trained)
DIFFUSION_FILE = "diffusion.safetensors"


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
    if not os.path.exists(model_dir):
        raise FileNotFoundError("model directory %s does not exist" % model_dir)
    if not os.path.isdir(model_dir):
        raise ValueError("model directory %s is a file, not a directory" % model_dir)
    required = ("config.yaml", "model.json", "embedder.safetensors", "prior.safetensors")
    missing = [name for name in required if not os.path.isfile(os.path.join(model_dir, name))]
    if len(missing) == len(required):
        raise ValueError("%s is not a model directory: it has no %s (`rawdiff train --export DIR` writes one)"
                         % (model_dir, ", ".join(missing)))
    if missing:
        raise ValueError("model directory %s has no %s" % (model_dir, ", ".join(missing)))
    try:
        with open(os.path.join(model_dir, "model.json")) as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("model directory %s: model.json is not JSON: %s" % (model_dir, exc)) from None
    if not isinstance(meta, dict):
        raise ValueError("model directory %s: model.json must hold an object" % model_dir)
    actual = compute_model_id(model_dir)
    if meta.get("model_id") != actual:
        raise ValueError("model directory %s: weights do not match model.json (model_id %s, files hash to %s)"
                         % (model_dir, meta.get("model_id"), actual))
    config = load_config(os.path.join(model_dir, "config.yaml"))
    _rename_legacy_keys(config, meta)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError("model directory %s: model.json lacks %s" % (model_dir, ", ".join(missing)))
    check_texture_entry(model_dir, meta)
    check_streams_of(model_dir, meta)
    if (meta.get("decoder_update") is not None) != os.path.isfile(os.path.join(model_dir, DECODER_UPDATE_FILE)):
        raise ValueError("model directory %s: %s" % (model_dir, "model.json names a decoder update but %s is missing"
                                                     % DECODER_UPDATE_FILE if meta.get("decoder_update") is not None
                                                     else "%s is there but model.json has no 'decoder_update' entry"
                                                     % DECODER_UPDATE_FILE))
    if meta.get("deblock") is not None:
        try:
            check_deblock_entry(meta["deblock"], len(meta.get("stages") or [None]), int(meta["factor"]))
        except ValueError as exc:
            raise ValueError("model directory %s: model.json's %s" % (model_dir, exc)) from None
    return {"config": config, "meta": meta}


def check_streams_of(model_dir: str, meta: Dict[str, Any]) -> None:
    """model.json's ``streams_of``: the models whose bitstreams this one decodes (it has their
    codes and prior, e.g. the base of a decoder update), a list of distinct model ids (32 hex
    digits); a ValueError naming what is wrong. Like the decoder-side settings beside it
    (texture, deblocking), model.json is trusted as written: an id listed here that does not
    share the codes and prior would decode to garbage, so only the exports that keep them write
    it (a decoder update, a decoder stage that keeps its init's prior, a diffusion decoder)."""
    ids = meta.get("streams_of")
    if ids is None:
        return
    if (not isinstance(ids, list) or not all(isinstance(m, str) and len(m) == 32 for m in ids)
            or not all(c in "0123456789abcdef" for m in ids for c in m)):
        raise ValueError("model directory %s: model.json's streams_of must be a list of model ids (32 lowercase "
                         "hex digits), got %r" % (model_dir, ids))
    if meta.get("model_id") in ids:
        raise ValueError("model directory %s: model.json's streams_of names the model itself" % model_dir)
    if len(set(ids)) != len(ids):
        raise ValueError("model directory %s: model.json's streams_of names a model twice" % model_dir)


def set_model_entry(model_dir: str, key: str, value: Any) -> Dict[str, Any]:
    """Set ``key`` of ``model_dir``'s model.json to ``value``, the rest as written (not as
    :func:`read_model_dir` normalises it), atomically; returns the new model.json."""
    path = os.path.join(model_dir, "model.json")
    with open(path) as f:
        meta = json.load(f)
    meta[key] = value
    write_text(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: bounds of a texture stage's settings: share of the realism knob, gain, network width,
#: bands (their sigmas, pixels) and the amplification of the image's own detail
TEXTURE_GAIN_MAX = 100.0
TEXTURE_CHANNELS_MAX = 512
#: width of a texture network whose model.json entry names none (and of a new fit by default)
TEXTURE_CHANNELS = 32
TEXTURE_BANDS_MAX = 4
TEXTURE_SIGMA_MIN = 0.5
TEXTURE_SIGMA_MAX = 16.0
TEXTURE_AMPLIFY_MAX = 16.0
#: the bands (sigmas) of a texture entry that names none: the first texture stages had two
TEXTURE_LEGACY_SIGMAS = (1.0, 2.0)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def check_texture_settings(share, gain, realism, channels=TEXTURE_CHANNELS, sigmas=None, amplify=None,
                           noise=None) -> None:
    """A texture stage's share (0 < share < 1), gain (0 < gain < TEXTURE_GAIN_MAX), default
    realism ([0, 1]), network width (2 .. TEXTURE_CHANNELS_MAX, even) and, where given, its
    bands' sigmas (1 .. TEXTURE_BANDS_MAX increasing numbers in [TEXTURE_SIGMA_MIN,
    TEXTURE_SIGMA_MAX]), the
    amplification of the image's own detail ([1, TEXTURE_AMPLIFY_MAX]) and the noise share
    ([0, 1]) of each band (a list, one a band); a ValueError naming the setting otherwise. ``rawdiff
    fit-texture`` checks them before it decodes anything."""
    for key, value, low, high in (("share", share, 0.0, 1.0), ("gain", gain, 0.0, TEXTURE_GAIN_MAX)):
        if not _is_number(value) or not low < float(value) < high:
            raise ValueError("texture %s must be a number in (%g, %g), got %r" % (key, low, high, value))
    try:
        check_realism(realism)
    except ValueError as exc:
        raise ValueError("texture realism: %s" % exc) from None
    if (not isinstance(channels, numbers.Integral) or isinstance(channels, bool)
            or not 2 <= int(channels) <= TEXTURE_CHANNELS_MAX or int(channels) % 2):
        raise ValueError("texture channels must be an even integer in [2, %d], got %r"
                         % (TEXTURE_CHANNELS_MAX, channels))
    if sigmas is not None:
        if (not isinstance(sigmas, (list, tuple)) or not 1 <= len(sigmas) <= TEXTURE_BANDS_MAX
                or not all(_is_number(x) and TEXTURE_SIGMA_MIN <= float(x) <= TEXTURE_SIGMA_MAX for x in sigmas)
                or any(float(a) >= float(b) for a, b in zip(sigmas, sigmas[1:]))):
            raise ValueError("texture sigmas must be 1 to %d increasing numbers in [%g, %g], got %r"
                             % (TEXTURE_BANDS_MAX, TEXTURE_SIGMA_MIN, TEXTURE_SIGMA_MAX, sigmas))
    bands = len(sigmas if sigmas is not None else TEXTURE_LEGACY_SIGMAS)
    for key, values, low, high in (("amplify", amplify, 1.0, TEXTURE_AMPLIFY_MAX), ("noise", noise, 0.0, 1.0)):
        if values is not None and (not isinstance(values, (list, tuple)) or len(values) != bands
                                   or not all(_is_number(x) and low <= float(x) <= high for x in values)):
            why = "" if sigmas is not None else "; no sigmas: the first stages' %d bands" % bands
            raise ValueError("texture %s must be %d numbers in [%g, %g] (one a band%s), got %r"
                             % (key, bands, low, high, why, values))


def check_texture_entry(model_dir: str, meta: Dict[str, Any]):
    """model.json's ``texture`` (share, gain, realism, channels, sha256) checked against
    ``texture.safetensors``, or None where the model has no texture stage."""
    path = os.path.join(model_dir, TEXTURE_FILE)
    entry = meta.get("texture")
    if entry is None:
        if os.path.isfile(path):
            raise ValueError("model directory %s has %s but model.json has no 'texture' entry"
                             % (model_dir, TEXTURE_FILE))
        return None
    if not isinstance(entry, dict):
        raise ValueError("model directory %s: model.json's 'texture' must be an object" % model_dir)
    if not os.path.isfile(path):
        raise ValueError("model directory %s: model.json names a texture stage but %s is missing"
                         % (model_dir, TEXTURE_FILE))
    digest = file_sha256(path)
    if entry.get("sha256") != digest:
        raise ValueError("model directory %s: %s does not match model.json (sha256 %s, the file hashes to %s)"
                         % (model_dir, TEXTURE_FILE, entry.get("sha256"), digest))
    try:
        check_texture_settings(entry.get("share"), entry.get("gain"), entry.get("realism"), entry.get("channels"),
                               entry.get("sigmas"), entry.get("amplify"), entry.get("noise"))
        if entry.get("level") is not None:
            check_texture_level(entry["level"], len(entry.get("sigmas") or TEXTURE_LEGACY_SIGMAS))
    except ValueError as exc:
        raise ValueError("model directory %s: model.json's %s" % (model_dir, exc)) from None
    return entry


def check_texture_level(level, bands: int) -> None:
    """A texture entry's ``level`` (:mod:`rawdiff.codec.detail_stats`): ``coefficients``, one
    list a band of the detail statistics' weights and a constant (the band's expected mean log
    energy is their dot product with the statistics and 1); a ValueError naming what is
    wrong."""
    from rawdiff.codec.detail_stats import FEATURES

    coefficients = level.get("coefficients") if isinstance(level, dict) else None
    if (not isinstance(coefficients, list) or len(coefficients) != bands
            or not all(isinstance(row, list) and len(row) == FEATURES + 1 and all(_is_number(x) for x in row)
                       for row in coefficients)):
        raise ValueError("texture level must hold 'coefficients': %d lists (one a band) of %d finite numbers, got %r"
                         % (bands, FEATURES + 1, coefficients if isinstance(level, dict) else level))


#: largest clip and beta a model.json's ``deblock`` may name (8-bit levels)
DEBLOCK_LEVEL_MAX = 255.0


def check_deblock_entry(entry, qualities: int, cell: int) -> None:
    """model.json's ``deblock`` (the decoder's deblocking filter, :mod:`rawdiff.codec.deblock`):
    ``taps``, ``clip`` and ``beta``, a list each, one an operating point of a model of
    ``qualities``, with taps an integer in [0, ``cell`` / 2] and clip and beta in [0, 255] (an
    operating point with any of them 0 is not filtered); a ValueError naming what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError("deblock must be an object with taps, clip and beta, got %r" % (entry,))
    for key, high, integral in (("taps", int(cell) // 2, True), ("clip", DEBLOCK_LEVEL_MAX, False),
                                ("beta", DEBLOCK_LEVEL_MAX, False)):
        values = entry.get(key)
        ok = isinstance(values, list) and len(values) == qualities and all(
            _is_number(v) and 0 <= float(v) <= high and (not integral or float(v) == int(v)) for v in values)
        if not ok:
            raise ValueError("deblock %s must be %d %s in [0, %g] (one an operating point), got %r"
                             % (key, qualities, "integers" if integral else "numbers", high, values))


def deblocked_qualities(entry) -> list:
    """The operating points (1-based) a checked ``deblock`` entry filters: those whose taps,
    clip and beta are all above 0 (:func:`check_deblock_entry`)."""
    return [i + 1 for i, setting in enumerate(zip(entry["taps"], entry["clip"], entry["beta"]))
            if min(float(v) for v in setting) > 0]


def check_realism(realism) -> float:
    """A diffusion decoder's ``realism`` as a float in [0, 1] (finest scale first: the texture
    stage's share, then the share of the latent's channels that get the drawn residual:
    :meth:`rawdiff.codec.Codec.realism_split`, :func:`rawdiff.models.ldm.realism_mask`), or a
    ValueError naming the value."""
    try:
        r = float(realism)
    except (TypeError, ValueError):
        raise ValueError("realism must be a number in [0, 1], got %r" % (realism,)) from None
    if not 0.0 <= r <= 1.0:
        raise ValueError("realism must be in [0, 1] (0: the fast path, 1: a whole sample), got %g" % r)
    return r


#: diffusion sampling steps of a decode that names none
DEFAULT_DIFFUSION_STEPS = 4


def diffusion_steps(mode: str, steps: Optional[int], realism: Optional[float]) -> int:
    """The sampling steps of a decode in ``mode`` (``steps``, None: the default); a ValueError
    when steps or a realism are given for the fast path, which would ignore them."""
    given = [n for n, v in (("--steps", steps), ("--realism", realism)) if v is not None]
    if mode != "diffusion" and given:
        raise ValueError("%s given for the %s path: %s for --mode diffusion"
                         % (" and ".join(given), mode, "they are" if len(given) > 1 else "it is"))
    return DEFAULT_DIFFUSION_STEPS if steps is None else int(steps)


def check_quality(quality, qualities: int) -> int:
    """``quality`` (an integer, numpy's too) as a number of stages in 1..``qualities``; a clear
    error otherwise. The one check of a quality, for the codec, the bag commands (which read
    model.json without loading the model) and the export of ``codec.default_quality``."""
    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral):
        raise ValueError("quality must be an integer, got %r" % (quality,))
    q = int(quality)
    if not 1 <= q <= qualities:
        raise ValueError("quality %r is not one of this model's operating points 1..%d" % (quality, qualities))
    return q


#: What model.json must say beside model_id for a codec to be built from the directory.
REQUIRED_META = ("factor", "codebook_size")


def _rename_legacy_keys(config: Dict[str, Any], meta: Dict[str, Any]) -> None:
    """Directories written before the codebook size had one name called it ``n_embed``."""
    if "n_embed" in meta:
        meta.setdefault("codebook_size", meta.pop("n_embed"))
    nodes = [config.get("model", {}).get("params", {}).get("embedder")]
    distill = config.get("encoder_distill") or {}
    nodes.append(((distill.get("model") or {}).get("params") or {}).get("embedder"))
    for node in nodes:
        if isinstance(node, dict) and "n_embed" in node:
            node.setdefault("codebook_size", node.pop("n_embed"))
