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
from rawdiff.models.texture import CHANNELS, SIGMAS, STRIDE, TextureEnergy, band_energies, energy_loss
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


def write_texture(model_dir: str, net: TextureEnergy, share: float, gain: float, record: dict,
                  realism: float = 0.25, amplify: Optional[Sequence[float]] = None,
                  noise: Optional[Sequence[float]] = None) -> dict:
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
    set_model_entry(model_dir, "texture", entry)
    return entry


__all__ = ["decoded_examples", "fit_texture", "write_texture"]
