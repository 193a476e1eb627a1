"""The encoder as one ONNX graph for the vehicle (the codec runs it: :mod:`rawdiff.codec.onnx_runtime`).

    planes (1 x 4 x h x w float32, h and w multiples of plane_multiple)
      --pixel_unshuffle--> Encoder --l2-normalise--> nearest code (argmin) --> indices (1 x h/m x w/m int64)

The graph is traced from :meth:`Embedder.encode_indices`, the function the torch backend
runs, so the two backends cannot drift apart; height and width are dynamic. The
default opset 17 runs on onnxruntime 1.17 and later (what a vehicle computer may carry);
onnxruntime 1.17 runs opsets up to 20.

The export records in ``model.json["onnx"]`` what the graph was made from (``embedder_id``,
``model_id``, the file's SHA-256), so that the runtime refuses a stale graph
(:mod:`rawdiff.codec.onnx_runtime` says how). A directory that only gained weights the graph
does not contain (a diffusion decoder, a refitted index prior: a new ``model_id``, the same
``embedder_id``) keeps its graph.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from typing import Any, Dict, Optional

import numpy as np

from rawdiff.codec.modeldir import file_sha256, read_model_dir
from rawdiff.codec.onnx_runtime import (
    INPUT_NAME,
    ONNX_FILE,
    create_session,
    embedder_id,
    run_encoder,
    stage_output_name,
)

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: opsets the classic exporter writes and onnxruntime 1.17 runs
OPSET_RANGE = (13, 20)
#: agreement with torch that the export check and the parity test require
MIN_AGREEMENT = 0.999


# --- export --------------------------------------------------------------------------------------


def check_opset(opset: int) -> int:
    opset = int(opset)
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ValueError("opset %d is outside %d..%d (the exporter's opsets that onnxruntime 1.17 runs)"
                         % (opset, OPSET_RANGE[0], OPSET_RANGE[1]))
    return opset


def export_embedder(embedder, path: str, opset: int = DEFAULT_OPSET,
                    metadata: Optional[Dict[str, Any]] = None) -> str:
    """Trace ``embedder.encode_codes`` (planes -> an int64 index grid per quantizer stage,
    outputs ``indices``, ``indices_2``, ...) into ``path``.

    Uses the classic TorchScript exporter (``dynamo=False``): it needs no ``onnxscript``
    and writes any opset from 13 on. ``metadata`` goes into the graph's metadata_props.
    """
    import onnx
    import torch

    opset = check_opset(opset)

    class EncodeIndices(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, planes):
            return tuple(self.net.encode_codes(planes))

    was_training = embedder.training
    embedder.eval()
    device = next(embedder.parameters()).device
    m = embedder.plane_multiple
    example = torch.rand(1, 4, 4 * m, 6 * m, device=device)
    outputs = [stage_output_name(k) for k in range(len(embedder.stages))]
    tmp = path + ".tmp"
    try:
        with warnings.catch_warnings():
            # the exporter's deprecation notice, and GroupNorm's training-mode batch check
            warnings.simplefilter("ignore")
            torch.onnx.export(
                EncodeIndices(embedder), (example,), tmp, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=outputs, do_constant_folding=True,
                dynamic_axes=dict({INPUT_NAME: {0: "batch", 2: "height", 3: "width"}},
                                  **{name: {0: "batch", 1: "code_height_%d" % (k + 1), 2: "code_width_%d" % (k + 1)}
                                     for k, name in enumerate(outputs)}))
        model = onnx.load(tmp)
        onnx.checker.check_model(model)
        meta = {"producer": "rawdiff", "plane_multiple": m, "factor": embedder.factor,
                "codebook_size": embedder.codebook_size, "stages": len(embedder.stages), "opset": opset}
        meta.update(metadata or {})
        onnx.helper.set_model_props(model, {k: str(v) for k, v in meta.items()})
        model.doc_string = "rawdiff encoder: RAW planes (R, G1, G2, B) in [0, 1] -> codebook indices"
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        embedder.train(was_training)
    return path


def agreement(session, embedder, planes: np.ndarray) -> float:
    """Fraction of grid positions where onnxruntime and torch pick the same code, over the
    grids of every stage."""
    import torch

    from rawdiff.models.embedder import pad_planes

    m = embedder.plane_multiple
    ours = run_encoder(session, planes, m)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32))[None]
        x, _ = pad_planes(x.to(next(embedder.parameters()).device), m)
        ref = [g[0].cpu().numpy() for g in embedder.encode_codes(x)]
    same = sum(int(np.sum(a == b)) for a, b in zip(ours, ref))
    return float(same / sum(g.size for g in ref))


def _check_planes(embedder, seed: int = 0) -> np.ndarray:
    """Smooth, frame-like planes (gradients and blobs, not white noise) for the export check."""
    m = embedder.plane_multiple
    h, w = 6 * m + 3, 9 * m + 5  # not multiples: the check covers padding too
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    planes = []
    for _ in range(4):
        f = rng.uniform(0.02, 0.2, 2)
        planes.append(0.5 + 0.3 * np.sin(f[0] * yy + rng.uniform(0, 6)) * np.cos(f[1] * xx))
    planes = np.stack(planes) + rng.normal(0, 0.01, (4, h, w))
    return np.clip(planes, 0, 1).astype(np.float32)


def _write_json(path: str, data: Dict[str, Any]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".model.json.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_encoder(model_dir: str, opset: int = DEFAULT_OPSET, verify: bool = True) -> Dict[str, Any]:
    """Write ``encoder.onnx`` into a model directory and record it in ``model.json``.

    With ``verify`` the new graph is run once by onnxruntime on the CPU and must pick
    the torch codes on at least 99.9 % of the positions. Returns the record written
    to ``model.json["onnx"]``.
    """
    import onnx
    import torch

    from rawdiff.models.decoder_update import embedder_weights
    from rawdiff.models.embedder import load_embedder

    opset = check_opset(opset)
    info = read_model_dir(model_dir)  # the weights must match model.json before we vouch for them
    meta = info["meta"]
    params = info["config"].get("model", {}).get("params", {})
    embedder = load_embedder(params, embedder_weights(model_dir), torch.device("cpu"))
    path = os.path.join(model_dir, ONNX_FILE)
    ids = {"model_id": meta["model_id"], "embedder_id": embedder_id(model_dir)}
    export_embedder(embedder, path, opset, metadata=ids)
    record: Dict[str, Any] = dict(ids)
    record.update(file=ONNX_FILE, sha256=file_sha256(path), opset=opset, exported=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  torch=torch.__version__, onnx=onnx.__version__)
    if verify:
        session = create_session(path, "cpu")
        record["check_agreement"] = agreement(session, embedder, _check_planes(embedder))
        if record["check_agreement"] < MIN_AGREEMENT:
            os.remove(path)
            raise ValueError("exported encoder disagrees with torch on %.2f %% of the codes (allowed %.2f %%)"
                             % (100 * (1 - record["check_agreement"]), 100 * (1 - MIN_AGREEMENT)))
    meta = dict(meta)
    meta["onnx"] = record
    _write_json(os.path.join(model_dir, "model.json"), meta)
    return record


# --- command line --------------------------------------------------------------------------------


def run(args) -> int:
    """``rawdiff export-onnx --model DIR [--opset N]``."""
    started = time.time()
    record = export_encoder(args.model, opset=args.opset)
    path = os.path.join(args.model, ONNX_FILE)
    print("%s: model %s, opset %d, %.1f MB, %.2f %% of codes as torch (check), %.1f s"
          % (path, record["model_id"], record["opset"], os.path.getsize(path) / 1e6,
             100.0 * record.get("check_agreement", float("nan")), time.time() - started))
    return 0
