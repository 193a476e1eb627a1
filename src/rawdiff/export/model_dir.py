"""Writing a model directory (:mod:`rawdiff.codec.modeldir` reads it): the trained weights,
the index prior fitted on the training split, ``config.yaml``, ``model.json`` and the card.

    trained module --embedder_state--> embedder.safetensors
                   --codes of the training frames--> fit_prior --> prior.safetensors
                   --cell means and codes of the training frames--> fit_means --> means.safetensors
                      (a model with mean layers)
                   --> config.yaml, model.json (model_id), MODEL_CARD.md

Every file is written into a temporary folder next to the destination, and the folder is
renamed into place only after the last check, so a failed export never leaves a half-written
model directory, and an existing one is replaced whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from rawdiff.codec.entropy import StagedPrior
from rawdiff.codec.modeldir import DECODER_UPDATE_FILE, check_quality, compute_model_id, read_model_dir
from rawdiff.codec.prior_fit import fit_prior as fit_index_prior
from rawdiff.config import save_config
from rawdiff.models.decoder_update import (
    DECODER_PREFIXES,
    UPDATE_FORMAT,
    coding_differences,
    embedder_weights,
    make_update,
    update_error,
)
from rawdiff.models.embedder import DEFAULTED_SUFFIXES, training_only


@contextlib.contextmanager
def staged_directory(out: str) -> Iterator[str]:
    """A temporary folder beside ``out`` that becomes ``out`` when the block ends without an
    error (an existing ``out`` is replaced; it is kept when the block fails)."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out) + ".", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = None
        if os.path.lexists(out):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(out) + ".old.", dir=parent)
            os.rmdir(old)
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


#: how floating-point weights may be stored (``codec.decoder_weights``, ``codec.diffusion_weights``)
WEIGHT_STORAGE = ("float32", "float16")


def check_weight_storage(value: str, setting: str) -> str:
    """``value`` of a weight-storage setting (float32 or float16), else a ValueError naming it."""
    if value not in WEIGHT_STORAGE:
        raise ValueError("codec.%s must be one of %s, got %r" % (setting, ", ".join(WEIGHT_STORAGE), value))
    return value


def stored_tensor(name: str, value: torch.Tensor, half: bool) -> torch.Tensor:
    """``value`` as written: in half precision when ``half`` and it is a floating-point tensor
    of more than one value (they load into float32 networks; a single value, such as a
    latent scale, stays float32), refusing one that float16 cannot hold."""
    if half and value.is_floating_point() and value.numel() > 1:
        if bool((value.abs() > torch.finfo(torch.float16).max).any()):
            raise ValueError("weight %s exceeds the float16 range" % name)
        return value.half()
    return value


def embedder_state(embedder: torch.nn.Module, decoder_weights: str = "float32") -> Dict[str, torch.Tensor]:
    """The weights to ship: no training-only buffers, and no buffer that holds its default
    (an all-zero ``code_cost``: a nearest-code search), so a model that does not use a newer
    feature writes the same file, and the same model_id, as before it existed.
    ``decoder_weights: float16`` stores the decoder side's floating-point weights in half
    precision (half the bytes; they load into float32 networks); the encoder side (analysis,
    codebooks, code costs) always in float32: its codes are the ONNX graph's, bit for bit."""
    half = check_weight_storage(decoder_weights, "decoder_weights") == "float16"
    out = {}
    for k, v in embedder.state_dict().items():
        if training_only(k) or (k.endswith(DEFAULTED_SUFFIXES) and not bool(v.any())):
            continue
        out[k] = stored_tensor(k, v.detach().cpu().contiguous(), half and k.startswith(DECODER_PREFIXES))
    return out


def iter_index_frames(index_file: str, limit: Optional[int] = None) -> Iterable:
    """RAW frames listed in an index file (one path a line, relative to the file's folder)."""
    from rawdiff.data.dataset import read_index
    from rawdiff.raw import read_raw

    for path in read_index(index_file)[:limit]:
        yield read_raw(path)


@torch.inference_mode()
def frame_codes(embedder, frame, device: Optional[torch.device] = None, with_means: bool = False
                ) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
    """The code grids of every stage of ``frame`` (one grid for a plain codebook) and, with
    ``with_means``, what the mean layers send for it
    (:func:`rawdiff.codec.cell_means.planes_gamma`; else None), from the same planes."""
    from rawdiff.codec.cell_means import planes_gamma
    from rawdiff.models.embedder import pad_planes
    from rawdiff.raw.isp import model_planes, render_parameters

    gains = render_parameters(frame)["wb_gains"] if embedder.out == "linear" else None
    planes = model_planes(frame, None if gains is None else np.float32(gains))
    padded, _ = pad_planes(torch.from_numpy(planes)[None].to(device or "cpu"), embedder.plane_multiple)
    grids = [g[0].cpu().numpy() for g in embedder.encode_codes(padded)]
    return grids, planes_gamma(planes, embedder.plane_multiple) if with_means else None


#: clusters of the neighbours' codes in the contexts of the first stage, and of the later
#: stages (whose contexts also hold the previous stage's code: fewer, so the tables stay small)
FIRST_STAGE_CLUSTERS = 16
LATER_STAGE_CLUSTERS = 8
PARENT_CLUSTERS = 8


def training_codes(embedder, frames: Iterable, with_means: bool = False
                   ) -> Tuple[List[List[np.ndarray]], List[Optional[np.ndarray]]]:
    """:func:`frame_codes` of ``frames`` in one pass over them (each frame read once): the
    code grids (per frame, a grid per stage) and what the mean layers send for each."""
    device = next(embedder.parameters()).device
    was_training = embedder.training
    embedder.eval()
    done = [frame_codes(embedder, f, device, with_means) for f in frames]
    embedder.train(was_training)
    return [c for c, _ in done], [g for _, g in done]


def fit_means(embedder, gammas: List[np.ndarray], codes: List[List[np.ndarray]]):
    """The mean layers of ``embedder`` (its ``mean_layers``): each codeword's contribution to
    the cell means, and the symbols' frequency tables fitted on frames whose cell means are
    ``gammas`` and code grids ``codes``; returns them and each layer's bits per value there."""
    from rawdiff.codec.cell_means import MeanLayers, fit, mean_tables
    from rawdiff.models.embedder import cell_mean_functional

    codebooks = [cb.codebook().detach().cpu().double().numpy() for cb in embedder.quantize.codebooks]
    functional = cell_mean_functional(embedder.analysis_weight.detach().cpu().double()).numpy()
    tables, offset = mean_tables(functional, embedder.analysis_bias.detach().cpu().double().numpy(), codebooks)
    layers = MeanLayers(embedder.mean_layers, embedder.stages, tables, offset)
    return layers, fit(layers, list(zip(gammas, codes)))


def fit_prior(embedder, codes: List[List[np.ndarray]], kind: str = "context") -> StagedPrior:
    """The index prior of ``embedder``'s ``codes`` of the training frames (a
    :class:`StagedPrior`, one stage per quantizer stage)."""
    if not codes:
        raise ValueError("no training frames to fit the index prior on")
    stages = []
    for k, (scale, size) in enumerate(embedder.stages):
        grids = [c[k] for c in codes]
        if k == 0 or kind != "context":
            stages.append(fit_index_prior(grids, size, kind=kind, num_clusters=FIRST_STAGE_CLUSTERS))
            continue
        stages.append(fit_index_prior(grids, size, kind=kind, num_clusters=LATER_STAGE_CLUSTERS,
                                      parents=[c[k - 1] for c in codes], parent_size=embedder.stages[k - 1][1],
                                      parent_ratio=embedder.stages[k - 1][0] // scale,
                                      parent_clusters=PARENT_CLUSTERS))
    return StagedPrior(stages)


def prior_summary(prior: StagedPrior, codes: List[List[np.ndarray]]) -> Dict[str, Any]:
    """What model.json says of the prior: bits per index on the fitting frames, per stage
    next to log2 K, and the codes in use."""
    per_stage = []
    for k, stage in enumerate(prior.stages):
        grids = [c[k] for c in codes]
        bits = sum(stage.bits(g, c[k - 1] if stage.parent_cluster is not None else None)
                   for g, c in zip(grids, codes))
        used = np.unique(np.concatenate([g.ravel() for g in grids])).size
        per_stage.append({"bits_per_index": float(bits / sum(g.size for g in grids)),
                          "log2_codebook_size": float(np.log2(stage.codebook_size)), "codes_used": int(used),
                          "codebook_size": stage.codebook_size})
    out = {"frames": len(codes), "bits_per_index": per_stage[0]["bits_per_index"],
           "codes_used": per_stage[0]["codes_used"]}
    if len(per_stage) > 1:
        out["stages"] = per_stage
    return out


def write_model_card(out: str, meta: Dict[str, Any]) -> None:
    lines = ["# rawdiff model %s" % meta["model_id"], ""]
    lines.append("Downsampling factor f%d, %d codes; entropy model: %s."
                 % (meta["factor"], meta["codebook_size"], meta.get("prior_kind", "?")))
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
        lines += ["", "## Index prior (training split)", ""]
        if "stages" in p:
            lines += ["%d frames; coded bits per index of each stage against log2 K:" % p["frames"], "",
                      "| stage | grid | K | bits per index | log2 K | codes used |", "|---|---|---|---|---|---|"]
            for k, (st, (scale, _)) in enumerate(zip(p["stages"], meta.get("stages") or [])):
                lines.append("| %d | f%d | %d | %.3f | %.2f | %d |" % (
                    k + 1, meta["factor"] * scale, st["codebook_size"], st["bits_per_index"],
                    st["log2_codebook_size"], st["codes_used"]))
        else:
            lines.append("%d frames, %.3f bits per index (log2 K = %.2f), %d of %d codes used (%.1f %%)."
                         % (p["frames"], p["bits_per_index"], np.log2(meta["codebook_size"]), p["codes_used"],
                            meta["codebook_size"], 100.0 * p["codes_used"] / meta["codebook_size"]))
    with open(os.path.join(out, "MODEL_CARD.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def kept_prior(model, tmp: str, prior_kind: str, with_means: bool) -> Dict[str, Any]:
    """``codec.keep_prior``: a stage trained on frozen codes takes the index prior (and cell
    means) of the model it started from (``model.params.init``) byte for byte instead of
    fitting them again on the training frames: the codes are the same, so the fit could only
    repeat it up to float rounding, in minutes over large frames. Copies the files into
    ``tmp``; returns model.json's entries for them."""
    from rawdiff.models.ldm import same_codes

    init = getattr(model, "hparams", {}).get("init")
    if not getattr(model, "frozen_codes", False) or not init:
        raise ValueError("codec.keep_prior keeps the prior of model.params.init for a stage trained with "
                         "model.params.frozen_codes: this model has %s"
                         % ("no init" if not init else "codes that train"))
    info = read_model_dir(init)
    old = info["meta"]
    if old.get("prior_kind", "context") != prior_kind:
        raise ValueError("codec.keep_prior: %s has a %s prior, this config asks for %s"
                         % (init, old.get("prior_kind"), prior_kind))
    if not same_codes(embedder_weights(init), model.embedder):
        raise ValueError("codec.keep_prior: the embedder does not code as %s does (its encoder, analysis or "
                         "codebooks changed), so its prior does not fit" % init)
    names = ["prior.safetensors"] + (["means.safetensors"] if with_means else [])
    missing = [n for n in names if not os.path.isfile(os.path.join(init, n))]
    if missing:
        raise ValueError("codec.keep_prior: %s has no %s" % (init, ", ".join(missing)))
    for name in names:
        shutil.copy2(os.path.join(init, name), os.path.join(tmp, name))
    entries: Dict[str, Any] = {"prior": dict(old["prior"], kept_from=old["model_id"]),
                               "streams_of": streams_of(old)}  # the same codes and prior
    if with_means:
        entries["means"] = dict(old["means"])
    return entries


def streams_of(meta: Dict[str, Any]) -> List[str]:
    """model.json's ``streams_of`` for a model that keeps the codes and prior of the model
    ``meta`` describes: that model and the ones whose streams it decodes."""
    return [meta["model_id"]] + [m for m in meta.get("streams_of") or [] if m != meta["model_id"]]


def export_model(model, cfg: Dict[str, Any], out: str, data=None, training: Optional[Dict] = None,
                 prior_kind: Optional[str] = None, prior_frames: Optional[int] = None) -> str:
    """Write the model directory of a trained embedder (``model.embedder``), or of a latent
    diffusion decoder (``model.is_diffusion``: :func:`export_diffusion_model`). Atomic: the
    directory appears (or replaces an earlier one) only when everything is written."""
    from safetensors.torch import save_file

    if getattr(model, "is_diffusion", False):
        return export_diffusion_model(model, cfg, out, training=training)
    if hasattr(model, "export_config"):
        cfg = model.export_config(cfg, out)  # the model directory's config differs from the run's
    codec_cfg = cfg.get("codec") or {}
    prior_kind = prior_kind or codec_cfg.get("prior", "context")
    index = getattr(data, "train_index", None) if data is not None else None
    if not index or not os.path.isfile(index):
        raise ValueError("the data module has no training index (train_index) to fit the index prior on")
    embedder = model.embedder
    with staged_directory(out) as tmp:
        save_file(embedder_state(embedder, codec_cfg.get("decoder_weights", "float32")),
                  os.path.join(tmp, "embedder.safetensors"), metadata={"format": "rawdiff-embedder-1"})
        meta: Dict[str, Any] = {"factor": embedder.factor, "codebook_size": embedder.codebook_size, "out": embedder.out,
                                "prior_kind": prior_kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                "training": training or {}}
        if embedder.staged:
            meta["stages"] = [list(st) for st in embedder.stages]
        if codec_cfg.get("default_quality") is not None:
            meta["default_quality"] = check_quality(codec_cfg["default_quality"], len(embedder.stages))
        with_means = bool(getattr(embedder, "mean_layers", None))
        if codec_cfg.get("keep_prior"):
            meta.update(kept_prior(model, tmp, prior_kind, with_means))
        else:
            frames = iter_index_frames(index, prior_frames or codec_cfg.get("prior_frames"))
            codes, gammas = training_codes(embedder, frames, with_means)
            prior = fit_prior(embedder, codes, prior_kind)
            if len(prior) == 1:
                prior.stages[0].save(os.path.join(tmp, "prior.safetensors"))
            else:
                prior.save(os.path.join(tmp, "prior.safetensors"))
            meta["prior"] = prior_summary(prior, codes)
            if with_means:
                layers, bits = fit_means(embedder, gammas, codes)
                layers.save(os.path.join(tmp, "means.safetensors"))
                meta["means"] = {"layers": [list(m) for m in layers.layers], "bits_per_value": bits,
                                 "frames": len(codes)}
        if hasattr(model, "export_extras"):
            meta.update(model.export_extras(tmp))  # files carried over from another model directory
        save_config(cfg, os.path.join(tmp, "config.yaml"))
        meta["model_id"] = compute_model_id(tmp)
        with open(os.path.join(tmp, "model.json"), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        write_model_card(tmp, meta)
        read_model_dir(tmp)  # the last check: what Codec.load will read
    return out


# What a diffusion model directory takes over unchanged from its embedder's directory. Not
# encoder.onnx: model.json vouches for it by model_id, which the diffusion weights change
# (re-export it with `rawdiff export-onnx --model DIR`).
_FROM_EMBEDDER = ("embedder.safetensors", "prior.safetensors", "means.safetensors", DECODER_UPDATE_FILE)


def export_diffusion_model(model, cfg: Dict[str, Any], out: str, training: Optional[Dict] = None) -> str:
    """Copy the embedder's model directory (``model.embedder_dir``: its weights and prior) to
    ``out`` and add the diffusion decoder: ``diffusion.safetensors`` (``model.diffusion_state()``,
    the EMA weights), the ldm config as the ``diffusion`` node of ``config.yaml`` (the rest stays
    the embedder's, so :meth:`Codec.load` reads it unchanged), and a new ``model_id`` over all
    weight files; the embedder's own streams (and those it decodes) decode here too: the same
    codes and prior (``streams_of``). Atomic, as
    :func:`export_model`. ``codec.diffusion_weights: float16`` in ``cfg`` stores the denoiser's
    weights (UNet and conditioner) in half precision: half the bytes (the shipped one: 9.4 MB
    against 18.9; its samples within 56 to 69 dB PSNR of float32's, README "Repository
    budget")."""
    from safetensors.torch import save_file

    src = os.path.abspath(model.embedder_dir)
    if os.path.abspath(out) == src:
        raise ValueError("diffusion export %s would overwrite the embedder's model directory" % out)
    info = read_model_dir(src)
    with staged_directory(out) as tmp:
        for name in _FROM_EMBEDDER:
            if os.path.isfile(os.path.join(src, name)):  # means: where the embedder has mean layers
                shutil.copy2(os.path.join(src, name), os.path.join(tmp, name))
        half = check_weight_storage((cfg.get("codec") or {}).get("diffusion_weights", "float32"),
                                    "diffusion_weights") == "float16"
        state = {k: stored_tensor(k, v.detach().cpu().contiguous(), half) for k, v in model.diffusion_state().items()}
        save_file(state, os.path.join(tmp, "diffusion.safetensors"), metadata={"format": "rawdiff-diffusion-1"})
        merged = dict(info["config"])
        merged["diffusion"] = cfg
        save_config(merged, os.path.join(tmp, "config.yaml"))
        meta = dict(info["meta"])
        meta.pop("onnx", None)
        meta.pop("texture", None)  # fitted on the embedder's decodes: fit it again on this directory's
        meta["embedder_model_id"] = info["meta"]["model_id"]
        meta["streams_of"] = streams_of(info["meta"])
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        training = dict(training or {})
        if getattr(model, "init_training", None):
            training["init"] = model.init_training  # the decoder it started from, and its training
        meta["diffusion"] = dict(model.diffusion_meta(), training=training)
        meta["model_id"] = compute_model_id(tmp)
        with open(os.path.join(tmp, "model.json"), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        write_model_card(tmp, meta)
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
            init = train.get("init")
            if init:
                lines += ["", "Started from the diffusion decoder of model %s, trained %s steps in %s s (run %s)."
                          % (init.get("model_id"), init.get("global_step"), init.get("wall_s"), init.get("run_dir"))]
        with open(os.path.join(tmp, "MODEL_CARD.md"), "a") as f:
            f.write("\n".join(lines) + "\n")
        read_model_dir(tmp)
    return out


# What a decoder update takes over from the base directory unchanged (the texture stage and
# the deblocking settings too, to be fitted again on the new decodes: `make model-texture`,
# `make model-deblock`). Not encoder.onnx: model.json vouches for it by model_id.
_FROM_BASE = ("config.yaml", "embedder.safetensors", "prior.safetensors", "means.safetensors",
              "diffusion.safetensors", "texture.safetensors", "MODEL_CARD.md")


def export_decoder_update(base: str, decoder: str, out: str) -> Dict[str, Any]:
    """``out``: the model directory ``base`` with the decoder side of ``decoder`` (a model on
    the same codes, e.g. a decoder stage trained on with ``frozen_codes``), stored as 8-bit
    differences from ``base``'s own ``embedder.safetensors``
    (:mod:`rawdiff.models.decoder_update`), which is copied byte for byte. Everything else is
    ``base``'s: prior, mean layers, diffusion decoder, texture stage, deblocking settings (choose
    the filter again on the new decodes, and check the texture stage on them). A new
    ``model_id``, and ``streams_of`` names ``base`` (its streams decode here); the measured
    operating points and the ONNX record are dropped (measure them again; `rawdiff
    export-onnx`). Atomic, as :func:`export_model`. Returns model.json's ``decoder_update`` entry."""
    from safetensors.torch import load_file, save_file

    if os.path.abspath(out) in (os.path.abspath(base), os.path.abspath(decoder)):
        raise ValueError("decoder update %s would overwrite one of its inputs" % out)
    info, other = read_model_dir(base), read_model_dir(decoder)
    current, new = embedder_weights(base), embedder_weights(decoder)  # as the codec runs them
    if coding_differences(current, new):
        raise ValueError("%s does not code as %s does (its encoder, analysis or codebooks differ): a decoder "
                         "update only carries a decoder side" % (decoder, base))
    mine, theirs = (((d["config"].get("model") or {}).get("params") or {}).get("embedder") or {} for d in (info, other))
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        raise ValueError("%s and %s build other networks (model.params.embedder differs in %s): a decoder update "
                         "keeps the base's config" % (decoder, base, ", ".join(differ)))
    # the update is of the base's file; where the base has an update of its own, that is not ``current``
    has_update = os.path.isfile(os.path.join(base, DECODER_UPDATE_FILE))
    stored = load_file(os.path.join(base, "embedder.safetensors")) if has_update else current
    try:
        update = make_update(stored, new)
        if not (make_update(current, new) if has_update else update):  # what the base runs already
            raise ValueError("%s has the decoder side of %s already: nothing to store" % (decoder, base))
    except ValueError as exc:
        raise ValueError("decoder update of %s from %s: %s" % (base, decoder, exc)) from None
    worst, relative = update_error(stored, new, update)
    with staged_directory(out) as tmp:
        for name in _FROM_BASE:
            if os.path.isfile(os.path.join(base, name)):
                shutil.copy2(os.path.join(base, name), os.path.join(tmp, name))
        save_file(update, os.path.join(tmp, DECODER_UPDATE_FILE), metadata={"format": UPDATE_FORMAT})
        meta = dict(info["meta"])
        for key in ("onnx", "operating_points", "decoder_update"):
            meta.pop(key, None)
        entry = {"base_model_id": info["meta"]["model_id"], "decoder_model_id": other["meta"]["model_id"],
                 "tensors": sum(1 for k in update if not k.endswith(":scale")),
                 "bytes": os.path.getsize(os.path.join(tmp, DECODER_UPDATE_FILE)),
                 "max_abs_error": worst, "relative_error": relative,
                 "training": other["meta"].get("training") or {}}
        meta["decoder_update"] = entry
        meta["streams_of"] = streams_of(info["meta"])  # the same codes and prior
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        meta["model_id"] = compute_model_id(tmp)
        with open(os.path.join(tmp, "model.json"), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        train = entry["training"]
        lines = ["", "## Decoder update", "",
                 "The decoder side of model %s (the same codes), stored as 8-bit differences from this "
                 "directory's embedder.safetensors (that of model %s) in %s: %d tensors, %d bytes; the largest "
                 "error of a weight %.3g, the error %.2g of the change's norm. Model id %s (was %s)."
                 % (entry["decoder_model_id"], entry["base_model_id"], DECODER_UPDATE_FILE, entry["tensors"],
                    entry["bytes"], worst, relative, meta["model_id"], entry["base_model_id"])]
        if train:
            lines += ["", "Its training: `rawdiff train --base %s %s`, %s steps, %s s on %s."
                      % (" ".join(train.get("bases", [])), " ".join(train.get("overrides", [])),
                         train.get("global_step"), train.get("wall_s"), train.get("accelerator"))]
        lines += ["", "The operating points are to be measured and the deblocking filter chosen again on its decodes "
                      "(the texture stage checked on them, or fitted again); encoder.onnx is not carried over "
                      "(`rawdiff export-onnx --model DIR`)."]
        with open(os.path.join(tmp, "MODEL_CARD.md"), "a") as f:
            f.write("\n".join(lines) + "\n")
        read_model_dir(tmp)
    return entry
