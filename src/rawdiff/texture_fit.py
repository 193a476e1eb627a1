"""Fitting the texture stage of a model directory (``rawdiff fit-texture``).

The decoded images are the model's own fast-path decodes of the training split at every
operating point, so the network learns the energy that those codes leave out; the targets
are the local band energies of the frames' reference images (what ``rawdiff eval`` measures
against: the prepared RGB where the corpus has it, else the reference ISP's rendering;
:mod:`rawdiff.models.texture`). The file ``texture.safetensors`` and its settings
(``texture`` in model.json: the share of the realism knob it takes, its gain, the default
realism, the network's width, the file's digest and a record of the fit) are written into the
model directory. The texture stage is decoder-side only and leaves the model_id, so streams
stay decodable.

The level (``texture.level``): a least-squares fit, band by band, of the mean log energy of
the references' bands on the frames' detail statistics (:mod:`rawdiff.codec.detail_stats`,
as the stream carries them, quantised) and a constant. With it in model.json the encoder
sends the statistics and the decoder scales the network's energies to that level
(:func:`rawdiff.models.texture.synthesize`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from rawdiff.codec.modeldir import TEXTURE_FILE, check_realism, check_texture_settings, set_model_entry
from rawdiff.metrics import to_tensor
from rawdiff.models.texture import CHANNELS, EPS, SIGMAS, STRIDE, TextureEnergy, band_energies, energy_loss
from rawdiff.outputs import write_bytes

logger = logging.getLogger(__name__)

Example = Tuple[np.ndarray, np.ndarray]  # reference uint8 H x W x 3, decodes uint8 S x H x W x 3


def decoded_examples(codec, paths: Sequence[str], max_pixels: int = 400_000,
                     progress: Optional[Callable[[int, int], None]] = None, deblock: bool = True) -> List[Example]:
    """(reference, fast decodes at every operating point) for each frame of ``paths``: each
    frame encoded once at the top quality and cut to the others (the stream is progressive);
    ``deblock=False``: without the model's deblocking filter."""
    from rawdiff.codec import truncate
    from rawdiff.eval.frames import load_frame

    out = []
    for i, path in enumerate(paths):
        frame, ref, _ = load_frame(path, max_pixels)
        top = codec.compress(frame, quality=codec.qualities)
        fast = np.stack([codec.decompress(truncate(top, q), deblock=deblock) for q in range(1, codec.qualities + 1)])
        out.append((ref, fast))
        if progress is not None:
            progress(i + 1, len(paths))
    return out


def fit_texture(examples: Iterable[Example], steps: int = 16000, crop: int = 128, batch: int = 16,
                lr: float = 2e-3, seed: int = 0, channels: int = CHANNELS, max_seconds: Optional[float] = None,
                log_every: int = 100, sigmas: Sequence[float] = SIGMAS) -> Tuple[TextureEnergy, dict]:
    """Train a :class:`TextureEnergy` on (reference, decodes) pairs: random ``crop`` squares of
    a random frame at a random operating point, the targets the reference's luma energies in
    the bands of ``sigmas``. Returns the network (eval mode) and a record of the fit (steps,
    seconds, bands, the last losses)."""
    examples = list(examples)
    if not examples:
        raise ValueError("texture fit: no frames")
    crop = int(crop) // STRIDE * STRIDE
    usable = [(ref, fast) for ref, fast in examples if min(ref.shape[:2]) >= crop]
    if not usable:
        raise ValueError("texture fit: every frame is smaller than the crop of %d pixels" % crop)
    qualities = usable[0][1].shape[0]
    sigmas = tuple(float(x) for x in sigmas)
    targets = [band_energies(to_tensor(ref), sigmas)[0] for ref, _ in usable]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = TextureEnergy(channels, len(sigmas))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(int(steps), 1))
    start = time.time()
    losses: List[float] = []
    step = 0
    for step in range(1, int(steps) + 1):
        imgs, lvls, tgts = [], [], []
        for _ in range(batch):
            k = int(rng.integers(len(usable)))
            ref, fast = usable[k]
            q = int(rng.integers(qualities))
            top = int(rng.integers(ref.shape[0] - crop + 1))
            left = int(rng.integers(ref.shape[1] - crop + 1))
            imgs.append(to_tensor(fast[q, top: top + crop, left: left + crop])[0])
            tgts.append(targets[k][:, top: top + crop, left: left + crop])
            lvls.append((q + 1) / qualities)
        loss = energy_loss(net(torch.stack(imgs), torch.tensor(lvls)), torch.stack(tgts))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log_every and step % log_every == 0:
            logger.info("texture fit: step %d/%d loss %.4f (%.0f s)", step, steps,
                        float(np.mean(losses[-log_every:])), time.time() - start)
        if max_seconds is not None and time.time() - start > max_seconds:
            break
    net.eval()
    record = {"steps": step, "seconds": round(time.time() - start, 1), "crop": crop, "batch": batch,
              "lr": lr, "seed": seed, "channels": channels, "sigmas": list(sigmas), "frames": len(usable),
              "loss_last_100": float(np.mean(losses[-100:]))}
    return net, record


def level_examples(codec, paths: Sequence[str], max_pixels: int = 400_000, sigmas: Sequence[float] = SIGMAS,
                   progress: Optional[Callable[[int, int], None]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(statistics, levels) of the frames of ``paths``: each frame's detail statistics as its
    stream carries them (quantised; N x FEATURES) and the mean log local energy of each band of
    its reference's luma (N x bands), on centre crops of at most ``max_pixels``."""
    from rawdiff.codec.detail_stats import dequantize, frame_detail
    from rawdiff.eval.frames import load_frame

    stats, levels = [], []
    for i, path in enumerate(paths):
        frame, ref, _ = load_frame(path, max_pixels)
        stats.append(dequantize(frame_detail(codec.model_planes(frame))))
        energy = band_energies(to_tensor(ref), sigmas)[0].clamp(min=EPS)
        levels.append(energy.log().mean(dim=(1, 2)).double().numpy())
        if progress is not None:
            progress(i + 1, len(paths))
    return np.array(stats), np.array(levels)


def fit_level(stats: np.ndarray, levels: np.ndarray) -> dict:
    """model.json's ``texture.level``: per band, the least-squares weights of the statistics
    and a constant that predict the band's mean log energy, with the fit's frames and its rms
    error per band (in the log)."""
    stats, levels = np.asarray(stats, dtype=np.float64), np.asarray(levels, dtype=np.float64)
    if stats.ndim != 2 or levels.ndim != 2 or len(stats) != len(levels):
        raise ValueError("texture level: %s statistics for %s levels" % (stats.shape, levels.shape))
    if len(stats) <= stats.shape[1] + 1:
        raise ValueError("texture level: %d frames cannot fit %d weights a band" % (len(stats), stats.shape[1] + 1))
    x = np.hstack([stats, np.ones((len(stats), 1))])
    coefficients, *_ = np.linalg.lstsq(x, levels, rcond=None)
    rms = np.sqrt(np.mean((x @ coefficients - levels) ** 2, axis=0))
    return {"coefficients": [[float(v) for v in row] for row in coefficients.T], "frames": int(len(stats)),
            "rms": [round(float(v), 4) for v in rms]}


def set_texture_level(model_dir: str, level: dict, **settings) -> dict:
    """Put ``level`` into the texture entry of model.json, its network kept, and ``settings``
    (share, gain, realism, amplify, noise: each replaces the entry's own); returns the entry."""
    from rawdiff.codec.modeldir import TEXTURE_LEGACY_SIGMAS, check_texture_level, read_model_dir

    entry = read_model_dir(model_dir)["meta"].get("texture")
    if entry is None:
        raise ValueError("model %s has no texture stage to set the level of" % model_dir)
    check_texture_level(level, len(entry.get("sigmas") or TEXTURE_LEGACY_SIGMAS))
    entry = dict(entry, level=level, **settings)
    check_texture_settings(entry.get("share"), entry.get("gain"), entry.get("realism"), entry.get("channels"),
                           entry.get("sigmas"), entry.get("amplify"), entry.get("noise"))
    set_model_entry(model_dir, "texture", entry)
    return entry


def write_texture(model_dir: str, net: TextureEnergy, share: float, gain: float, record: dict,
                  realism: float = 0.25, amplify: Optional[Sequence[float]] = None,
                  noise: Optional[Sequence[float]] = None, level: Optional[dict] = None) -> dict:
    """Write ``texture.safetensors`` and the ``texture`` entry of model.json (the settings of
    :class:`rawdiff.models.texture.Synthesis` among them), each atomically (the model_id
    stays: the stage is decoder-side)."""
    from safetensors.torch import save

    channels = net.channels
    sigmas = [float(x) for x in record.get("sigmas", SIGMAS)]
    if net.bands != len(sigmas):
        raise ValueError("texture network of %d bands for the %d sigmas %s" % (net.bands, len(sigmas), sigmas))
    amplify = [1.0] * len(sigmas) if amplify is None else [float(x) for x in amplify]
    noise = [1.0] * len(sigmas) if noise is None else [float(x) for x in noise]
    check_texture_settings(share, gain, realism, channels, sigmas, amplify, noise)
    path = os.path.join(model_dir, TEXTURE_FILE)
    data = save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
    write_bytes(path, data)
    entry = {"share": float(share), "gain": float(gain), "realism": check_realism(realism), "channels": channels,
             "sigmas": sigmas, "amplify": amplify, "noise": noise, "sha256": hashlib.sha256(data).hexdigest(),
             "parameters": sum(p.numel() for p in net.parameters()),
             "fit": record}
    if level is not None:
        from rawdiff.codec.modeldir import check_texture_level

        check_texture_level(level, len(sigmas))
        entry["level"] = level
    set_model_entry(model_dir, "texture", entry)
    return entry


__all__ = ["decoded_examples", "fit_level", "fit_texture", "level_examples", "set_texture_level", "write_texture"]
