"""The onnxruntime backend of the codec: opens a model directory's ``encoder.onnx`` and runs it.

    planes (4 x h x w float32, the model domain) --pad to plane_multiple--> onnxruntime
      --> indices (h/m x w/m int64)

This is the vehicle's encoder path: it needs numpy and onnxruntime, not torch (the graph is
written by :mod:`rawdiff.export.onnx`, which traces the torch encoder).

``encoder.onnx`` is not a weight file, so it does not enter ``model_id``
(:func:`rawdiff.codec.modeldir.compute_model_id`). Instead ``model.json["onnx"]`` records
the weights it was exported from: ``embedder_id`` (the digest of ``embedder.safetensors``,
the only weights in the graph), the ``model_id`` of the directory at export time, and the
file's SHA-256; the graph carries both ids in its metadata. :func:`open_session` refuses a
file that no longer matches ("stale": the embedder was retrained, or the file was swapped).

Execution providers are tried in the order TensorRT, CUDA, CPU, as far as the installed
onnxruntime has them (``onnxruntime-gpu`` brings the first two); the one chosen is logged.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from rawdiff.codec.modeldir import file_sha256, read_model_dir

logger = logging.getLogger(__name__)

ONNX_FILE = "encoder.onnx"
INPUT_NAME = "planes"
OUTPUT_NAME = "indices"
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def embedder_id(model_dir: str) -> str:
    """Digest of the embedder weights (32 hex digits, like ``model_id``): what the graph is made of."""
    return file_sha256(os.path.join(model_dir, "embedder.safetensors"))[:32]


def select_providers(device: Union[str, Any, None], available: Sequence[str]) -> List[str]:
    """Execution providers for ``device``, best first, among those onnxruntime has.

    ``auto``: TensorRT, CUDA, CPU as available. ``cpu``: the CPU only. ``cuda[:N]``:
    TensorRT and CUDA (an error if onnxruntime has neither), then the CPU for the
    operators they do not take.
    """
    name = "auto" if device in (None, "") else str(device)
    kind = name.split(":")[0]
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind not in ("auto", "cuda"):
        raise ValueError("device %r: the onnx backend runs on auto, cpu or cuda[:N]" % name)
    chosen = [p for p in PROVIDER_ORDER if p in available or p == "CPUExecutionProvider"]
    if kind == "cuda" and chosen == ["CPUExecutionProvider"]:
        raise ValueError("device %r requested but onnxruntime has no CUDA or TensorRT provider "
                         "(available: %s); install onnxruntime-gpu" % (name, ", ".join(available)))
    return chosen


def _provider_options(provider: str, device_id: int) -> Dict[str, Any]:
    if provider == "TensorrtExecutionProvider":
        # building an engine takes minutes, once per GPU and frame size: keep it across runs
        # (options that onnxruntime 1.17 already knows; an unknown one fails the session)
        cache = os.environ.get("RAWDIFF_TRT_CACHE") or os.path.join(
            os.path.expanduser("~"), ".cache", "rawdiff", "tensorrt")
        os.makedirs(cache, exist_ok=True)
        return {"device_id": device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache}
    if provider == "CUDAExecutionProvider":
        return {"device_id": device_id}
    return {}


def create_session(path: str, device: Union[str, Any, None] = "auto", threads: Optional[int] = None):
    """An onnxruntime session for an encoder graph, with no model-directory checks."""
    import onnxruntime as ort

    providers = select_providers(device, ort.get_available_providers())
    name = "auto" if device in (None, "") else str(device)
    device_id = int(name.split(":")[1]) if ":" in name else 0
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(path, sess_options=options, providers=providers,
                                   provider_options=[_provider_options(p, device_id) for p in providers])
    chosen = session.get_providers()
    logger.info("onnx encoder %s runs on %s (requested %s; onnxruntime %s)", path, chosen[0],
                ", ".join(providers), ort.__version__)
    if chosen[0] != providers[0]:
        logger.warning("onnxruntime could not start %s; the encoder runs on %s", providers[0], chosen[0])
    return session


def session_provider(session) -> str:
    """The execution provider that runs the graph (the first one onnxruntime kept)."""
    return session.get_providers()[0]


def open_session(model_dir: str, device: Union[str, Any, None] = "auto", threads: Optional[int] = None,
                 meta: Optional[Dict[str, Any]] = None):
    """The onnxruntime session of a model directory's ``encoder.onnx``.

    Raises ValueError when the file is missing, or stale: exported from other embedder
    weights, not recorded at all, or changed since the export. ``meta``: the directory's
    model.json when the caller has just checked it (read_model_dir), to skip a second check.
    """
    if meta is None:
        meta = read_model_dir(model_dir)["meta"]
    path = os.path.join(model_dir, ONNX_FILE)
    hint = "run `rawdiff export-onnx --model %s`" % model_dir
    if not os.path.isfile(path):
        raise ValueError("model directory %s has no %s; %s" % (model_dir, ONNX_FILE, hint))
    record = meta.get("onnx") or {}
    if not record:
        raise ValueError("%s is stale: model.json has no record of its export (the model directory was "
                         "rewritten since); %s" % (path, hint))
    weights = embedder_id(model_dir)
    if record.get("embedder_id") != weights:
        raise ValueError("%s is stale: exported from embedder weights %s (model %s), the directory's are %s; %s"
                         % (path, record.get("embedder_id"), record.get("model_id"), weights, hint))
    if record.get("sha256") != file_sha256(path):
        raise ValueError("%s is stale: it changed since the export recorded in model.json; %s" % (path, hint))
    session = create_session(path, device, threads)
    graph_id = session.get_modelmeta().custom_metadata_map.get("embedder_id")
    if graph_id != weights:
        raise ValueError("%s is stale: the graph says embedder weights %s, the directory's are %s; %s"
                         % (path, graph_id, weights, hint))
    if record.get("model_id") != meta["model_id"]:
        logger.info("%s was exported in model %s; model %s has the same embedder weights", path,
                    record.get("model_id"), meta["model_id"])
    return session


def pad_to_multiple(planes: np.ndarray, multiple: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Replicate-pad C x h x w to multiples of ``multiple`` (as :func:`rawdiff.models.embedder.pad_planes`)."""
    h, w = planes.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        planes = np.pad(planes, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return planes, (h, w)


def stage_output_name(k: int) -> str:
    """The graph output of quantizer stage ``k`` (0-based): ``indices``, ``indices_2``, ..."""
    return OUTPUT_NAME if k == 0 else "%s_%d" % (OUTPUT_NAME, k + 1)


def run_encoder(session, planes: np.ndarray, plane_multiple: int) -> List[np.ndarray]:
    """4 x h x w float32 planes -> the int64 code grids of every quantizer stage the graph
    has, coarse to fine (one grid, ceil(h/m) x ceil(w/m), for a model of one stage)."""
    planes = np.asarray(planes)
    if planes.ndim != 3 or planes.shape[0] != 4:
        raise ValueError("planes must be 4 x h x w (R, G1, G2, B), got shape %s" % (planes.shape,))
    planes, _ = pad_to_multiple(planes.astype(np.float32, copy=False), int(plane_multiple))
    names = [stage_output_name(k) for k in range(len(session.get_outputs()))]
    outs = session.run(names, {INPUT_NAME: np.ascontiguousarray(planes)[None]})
    return [out[0].astype(np.int64, copy=False) for out in outs]
