"""A decoder side stored as an update of the weights the codes were trained with.

    embedder.safetensors          the embedder as its codes were trained (encoder side and decoder)
    + decoder_update.safetensors  the decoder side's differences, 8 bits a weight, a scale a row
    = the embedder the codec runs (:func:`embedder_weights`)

A decoder trained further on frozen codes differs from the weights it started from by a
fraction of their size (about a fifth of their norm for the shipped model's later decoder
stages). Rounding that difference to 8 bits with one scale per output row loses far less than
rounding the weights themselves would (the same rounding of the weights: decodes 39 to 47 dB
from the float ones; of the difference: 55 to 59 dB; ``benchmarks/decoder_update_precision.py``),
and the update is a quarter of the
float32 decoder's bytes, while ``embedder.safetensors`` stays the file it was byte for byte
(in a repository: no new copy of it). The same idea as coding a P-frame against its
reference, or as the compressed fine-tuning deltas of large language models.

The update holds, for each decoder-side tensor that changed:

- ``KEY``: int8 differences, ``KEY:scale``: float32, one per row (the tensor's first
  dimension; a 0-D tensor is one row): the weight is ``base + int8 * scale``, computed in
  float64 and rounded once to the base's dtype (float32 for a half-precision base, whose
  rounding would cost the update its precision), the same on any machine;
- or ``KEY`` alone, a float32 or integer tensor: the new value as it is (single values,
  such as a norm's learnt gain, and integer buffers).

Only decoder-side keys (:data:`DECODER_PREFIXES`) may change: the encoder side, analysis and
codebooks decide the codes, which the update must not move. :func:`apply_update` refuses an
update that names another key, a key the weights lack, a shape, dtype or scale that does not
fit, or a weight that comes out infinite or NaN, with a message naming the key;
:func:`embedder_weights` also refuses a file of another format.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Tuple

import torch

#: the weights of the decoder side (what ``Embedder.decoder_side`` runs)
DECODER_PREFIXES = ("decoder.", "synthesis.", "refine.")
#: suffix of a difference's scales
SCALE_SUFFIX = ":scale"
#: the largest magnitude of the 8-bit differences (symmetric rounding)
LEVELS = 127
#: metadata ``format`` of the update file
UPDATE_FORMAT = "rawdiff-decoder-update-1"


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as rows: its first dimension by the rest (a 0-D tensor: one row of one)."""
    if t.dim() == 0:
        return t.reshape(1, 1)
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def _applied_dtype(dtype: torch.dtype) -> torch.dtype:
    """What an updated weight is stored as: the base's dtype, float32 for a half-precision base."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same shape and values (floating-point tensors compared as float64, whatever their dtype)."""
    if a.shape != b.shape or a.is_floating_point() != b.is_floating_point():
        return False
    return torch.equal(a.double(), b.double()) if a.is_floating_point() else torch.equal(a, b)


def coding_differences(base: Dict[str, torch.Tensor], new: Dict[str, torch.Tensor]) -> List[str]:
    """The keys off the decoder side (encoder, analysis, codebooks, code costs: what decides
    the codes) that ``new`` lacks or holds other values in; empty when both code alike."""
    return sorted(k for k, v in base.items() if not k.startswith(DECODER_PREFIXES)
                  and (k not in new or not _same(v, new[k])))


def make_update(base: Dict[str, torch.Tensor], new: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The update that takes the weights ``base`` to (about) ``new``: 8-bit differences of the
    decoder side's floating-point tensors of more than one value, the new value of the others
    that changed. A ValueError where the two do not share their keys and shapes, or where
    anything outside the decoder side differs (the codes would change)."""
    if set(base) != set(new):
        only = sorted(set(base) ^ set(new))
        raise ValueError("the two embedders have other weights: %s" % ", ".join(only[:5]))
    out: Dict[str, torch.Tensor] = {}
    for key in sorted(base):
        old, value = base[key], new[key]
        if old.shape != value.shape:
            raise ValueError("weight %s has shape %s in one embedder, %s in the other"
                             % (key, tuple(old.shape), tuple(value.shape)))
        if old.is_floating_point() != value.is_floating_point():
            raise ValueError("weight %s is floating-point in one embedder only" % key)
        if _same(old, value):
            continue
        if not key.startswith(DECODER_PREFIXES):
            raise ValueError("weight %s differs, and it is not on the decoder side: the two embedders do not "
                             "code alike" % key)
        if not value.is_floating_point():
            out[key] = value.clone().contiguous()
            continue
        if value.numel() == 1:
            out[key] = value.float().clone().contiguous()
            continue
        diff = _rows(value.double() - old.double())
        if not bool(torch.isfinite(diff).all()):
            raise ValueError("weight %s is not finite" % key)
        scale = diff.abs().amax(1) / LEVELS
        steps = torch.where(scale[:, None] > 0, diff / scale.clamp_min(1e-300)[:, None], torch.zeros_like(diff))
        out[key] = torch.round(steps).clamp(-LEVELS, LEVELS).to(torch.int8).reshape(value.shape).contiguous()
        out[key + SCALE_SUFFIX] = scale.float().contiguous()
    return out


def apply_update(base: Dict[str, torch.Tensor], update: Dict[str, torch.Tensor],
                 what: str = "the decoder update") -> Dict[str, torch.Tensor]:
    """``base`` with ``update`` applied (a new dict; ``base`` is not changed). A ValueError
    naming ``what`` and the key for an update that does not fit the weights."""
    out = dict(base)
    scales = {k[: -len(SCALE_SUFFIX)]: v for k, v in update.items() if k.endswith(SCALE_SUFFIX)}
    for key, value in sorted(update.items()):
        if key.endswith(SCALE_SUFFIX):
            diffs = update.get(key[: -len(SCALE_SUFFIX)])
            if diffs is None:
                raise ValueError("%s has scales %s without their differences" % (what, key))
            if diffs.dtype != torch.int8:
                raise ValueError("%s has scales %s for %s, which is %s, not 8-bit differences"
                                 % (what, key, key[: -len(SCALE_SUFFIX)], diffs.dtype))
            continue
        if not key.startswith(DECODER_PREFIXES):
            raise ValueError("%s changes %s, which is not on the decoder side (only %s may change: the codes "
                             "must not)" % (what, key, ", ".join(p + "*" for p in DECODER_PREFIXES)))
        if key not in base:
            raise ValueError("%s changes %s, which the embedder's weights do not have" % (what, key))
        old = base[key]
        if value.shape != old.shape:
            raise ValueError("%s has %s of shape %s for weights of shape %s"
                             % (what, key, tuple(value.shape), tuple(old.shape)))
        if value.dtype == torch.int8 and key in scales:
            scale = scales[key]
            rows = _rows(old).shape[0]
            if not old.is_floating_point() or not scale.is_floating_point() or tuple(scale.shape) != (rows,):
                raise ValueError("%s: %s needs %d floating-point scales for floating-point weights, has %s %s"
                                 % (what, key, rows, scale.dtype, tuple(scale.shape)))
            s = scale.double()
            if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
                raise ValueError("%s: the scales of %s must be finite and not negative" % (what, key))
            if bool((value == -128).any()):
                raise ValueError("%s: the differences of %s must be in [-%d, %d]" % (what, key, LEVELS, LEVELS))
            delta = (_rows(value.double()) * s[:, None]).reshape(old.shape)
            out[key] = (old.double() + delta).to(_applied_dtype(old.dtype))
        elif value.is_floating_point() == old.is_floating_point() and value.dtype != torch.int8:
            out[key] = value.to(_applied_dtype(old.dtype))
        else:
            raise ValueError("%s: %s is %s, which does not fit weights of dtype %s (8-bit differences need their "
                             "%s)" % (what, key, value.dtype, old.dtype, key + SCALE_SUFFIX))
        if out[key].is_floating_point() and not bool(torch.isfinite(out[key]).all()):
            raise ValueError("%s makes %s infinite or NaN" % (what, key))
    return out


def update_error(base: Dict[str, torch.Tensor], new: Dict[str, torch.Tensor],
                 update: Dict[str, torch.Tensor]) -> Tuple[float, float]:
    """How far ``base`` + ``update`` is from ``new`` on the decoder side: the largest absolute
    error of a weight, and the error's norm over the change's norm."""
    applied = apply_update(base, update)
    worst, err, change = 0.0, 0.0, 0.0
    for key in base:
        if key.startswith(DECODER_PREFIXES) and base[key].is_floating_point():
            e = applied[key].double() - new[key].double()
            worst = max(worst, float(e.abs().max()) if e.numel() else 0.0)
            err += float((e * e).sum())
            change += float(((new[key].double() - base[key].double()) ** 2).sum())
    return worst, (err / change) ** 0.5 if change > 0 else 0.0


def embedder_weights(model_dir: str) -> Dict[str, torch.Tensor]:
    """The weights of a model directory's embedder: ``embedder.safetensors``, with
    ``decoder_update.safetensors`` applied where the directory has one."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from rawdiff.codec.modeldir import DECODER_UPDATE_FILE

    state = load_file(os.path.join(model_dir, "embedder.safetensors"))
    path = os.path.join(model_dir, DECODER_UPDATE_FILE)
    if os.path.isfile(path):
        what = "model directory %s: %s" % (model_dir, DECODER_UPDATE_FILE)
        with safe_open(path, framework="pt") as f:
            found = (f.metadata() or {}).get("format")
            if found != UPDATE_FORMAT:
                raise ValueError("%s is of format %r, not %r" % (what, found, UPDATE_FORMAT))
            update = {k: f.get_tensor(k) for k in f.keys()}
        state = apply_update(state, update, what)
    return state


__all__ = ["DECODER_PREFIXES", "LEVELS", "SCALE_SUFFIX", "UPDATE_FORMAT", "apply_update", "coding_differences",
           "embedder_weights", "make_update", "update_error"]
