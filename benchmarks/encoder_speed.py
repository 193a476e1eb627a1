"""Encoder speed: torch vs onnxruntime vs the conventional demosaic + JPEG q80, at three automotive sensor sizes.

    python benchmarks/encoder_speed.py [--model DIR] [--repeats N] [--sizes 1936x1112 ...]
                                       [--threads N] [--json OUT] [--profile]
                                       [--config CFG] [--embedder key=value ...]
                                       [--encode-rows N] [--quality Q] [--static-tables]

For each frame size and each of
  (a) torch:  Codec.load(model, backend="torch").encode_codes(frame)
  (b) onnx:   Codec.load(model, backend="onnx").encode_codes(frame) (encoder.onnx, onnxruntime)
  (b') compress: Codec.load(model, backend="onnx").compress(frame): all the vehicle runs per
              frame (render parameters with a gray-world estimate, white balance, colour
              statistics, encoder.onnx, range coder, bitstream)
  (c) jpeg:   uint16 mosaic -> black level + gamma LUT to 8 bit -> cv2.demosaicing (bilinear)
              -> cv2.imencode JPEG quality 80 (what a vehicle would do instead)
one fresh child process loads the codec (or OpenCV) and the frame, runs one warm-up and
``--repeats`` timed frames, and reports the median wall time per frame and the peak
memory: the growth of the resident set (VmHWM after resetting it through
/proc/self/clear_refs, minus VmRSS before the first frame) while encoding, warm-up
included (onnxruntime's arena, torch's work buffers). Entropy coding of the indices is
included in (b') only. Frames are unprocessed (Brooks et al. 2019)
from a collage of scikit-image photographs, with sensor noise, 12 bit.

(a) and (b) are the codec's own backends, so what is timed is what the nodes and the
command line run. The model is ``--model DIR``, else models/default when it exists (a
missing or stale ``encoder.onnx`` is exported into a temporary copy of the directory);
``--config CFG`` (or ``--embedder``) instead builds an untrained embedder from a vqgan
config (default config/models/default.yaml, whose taming-style encoder the shipped
vehicle encoder replaced: the "before" of the README) and writes it as a model directory
with a uniform index prior; weights do not change the speed.
``--embedder key=value`` changes that config to try other network shapes, e.g.
``encoder.norm=none encoder.stem=4 encoder.ch_mult=[1] encoder.act=relu``.
``--profile`` adds, for the first size, where the time goes layer by layer (torch
forward hooks and the torch profiler; onnxruntime's own profiler).
``--encode-rows N`` sets the plane rows the codec encodes at a time (``Codec.encode_rows``;
0: the whole frame at once, as before strips) for a model whose encoder is a matrix per cell
(the shipped one); the codes are the same (the run checks them against torch's), the
memory a strip's. ``--quality Q`` sets the operating point of (b') (default: the model's
default); ``--static-tables`` codes (b')'s indices with the prior's tables as they are instead
of adapted to the frame (``Codec.adaptive_coding``, the format version 6 coding).

Prints the results as JSON, then as a markdown table, on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "models", "default")
DEFAULT_CONFIG = os.path.join(ROOT, "config", "models", "default.yaml")
SIZES = ("1936x1112", "2896x1876", "3868x2176")
METHODS = ("torch", "onnx", "compress", "jpeg")
JPEG_QUALITY = 80
MIB = 1024.0 * 1024.0
# OpenCV names a Bayer pattern by its second row: an RGGB sensor is COLOR_BayerBG2BGR
OPENCV_BAYER = {"RGGB": "BG", "BGGR": "RG", "GRBG": "GB", "GBRG": "GR"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_size(text: str):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("size %r is not WIDTHxHEIGHT" % text) from None
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError("size %r must be positive and even" % text)
    return w, h


# --- set-up (parent) -----------------------------------------------------------------------------


def make_frame(width: int, height: int, seed: int = 0):
    """A 12-bit RGGB frame unprocessed from a 2x2 collage of scikit-image photographs."""
    import cv2
    from skimage import data

    from rawdiff.raw.unprocess import unprocess

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    hh, hw = height // 2, width // 2
    tiles = [cv2.resize(p[..., :3], (hw, hh), interpolation=cv2.INTER_CUBIC) for p in photos]
    collage = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
    collage = cv2.resize(collage, (width, height), interpolation=cv2.INTER_NEAREST)  # odd halves
    frame, _ = unprocess(collage, seed=seed)
    return frame


def _linked_copy(model_dir: str, out: str) -> str:
    """``out`` as a model directory with the weights of ``model_dir`` (linked) and its own
    config and model.json, so that an encoder.onnx can be exported into it."""
    import shutil

    from rawdiff.codec.modeldir import WEIGHT_FILES

    os.makedirs(out)
    for name in os.listdir(model_dir):
        src = os.path.join(os.path.abspath(model_dir), name)
        if name in WEIGHT_FILES:
            os.symlink(src, os.path.join(out, name))
        elif name in ("config.yaml", "model.json"):
            shutil.copy2(src, os.path.join(out, name))
    return out


def _untrained_model_dir(net, cfg: dict, out: str) -> str:
    """A model directory of an untrained embedder: its weights, a uniform index prior, the config."""
    from safetensors.torch import save_file

    from rawdiff.codec.entropy import IndexPrior, StagedPrior
    from rawdiff.codec.modeldir import compute_model_id
    from rawdiff.config import save_config
    from rawdiff.export.model_dir import embedder_state

    os.makedirs(out)
    save_file(embedder_state(net), os.path.join(out, "embedder.safetensors"), metadata={"format": "rawdiff-embedder-1"})
    StagedPrior([IndexPrior.uniform(k) for _, k in net.stages]).save(os.path.join(out, "prior.safetensors"))
    save_config(cfg, os.path.join(out, "config.yaml"))
    meta = {"factor": net.factor, "codebook_size": net.codebook_size, "out": net.out, "prior_kind": "uniform",
            "model_id": compute_model_id(out)}
    if net.staged:
        meta["stages"] = [list(st) for st in net.stages]
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return out


def prepare_model(args, workdir: str) -> dict:
    """The model directory the children load (with a current encoder.onnx), and what it is."""
    import torch

    from rawdiff.codec import Codec, onnx_runtime
    from rawdiff.config import apply_overrides, load_config
    from rawdiff.export import onnx as onnx_export
    from rawdiff.models.embedder import embedder_from_config

    info = {}
    model_dir = args.model
    untrained = bool(args.embedder) or args.config is not None
    if model_dir is None and os.path.isfile(os.path.join(DEFAULT_MODEL, "model.json")) and not untrained:
        model_dir = DEFAULT_MODEL
    if model_dir is not None:
        if untrained:
            raise SystemExit("--config and --embedder describe an untrained model; not with --model")
        codec = Codec.load(model_dir, device="cpu", backend="torch")
        info.update(model=model_dir, model_id=codec.model_id, trained=True)
        try:
            onnx_runtime.open_session(model_dir, "cpu")
            info["onnx"] = "the model directory's encoder.onnx"
        except ValueError as exc:
            log("%s; exporting one for the benchmark" % exc)
            model_dir = _linked_copy(model_dir, os.path.join(workdir, "model"))
            onnx_export.export_encoder(model_dir, onnx_export.DEFAULT_OPSET, verify=False)
            info["onnx"] = "exported for the benchmark, opset %d" % onnx_export.DEFAULT_OPSET
        net, params = codec.embedder, codec.config.get("model", {}).get("params", {})
    else:
        config = args.config or DEFAULT_CONFIG
        cfg = load_config(config)
        params = cfg["model"]["params"]
        params["embedder"] = apply_overrides(params.get("embedder") or {}, args.embedder or [])
        torch.manual_seed(0)
        net = embedder_from_config(params).eval()
        name = "untrained, %s %s" % (os.path.relpath(os.path.abspath(config), ROOT), " ".join(args.embedder or []))
        info.update(model=name.strip(), trained=False)
        model_dir = _untrained_model_dir(net, cfg, os.path.join(workdir, "model"))
        onnx_export.export_encoder(model_dir, onnx_export.DEFAULT_OPSET, verify=False)
        info["onnx"] = "exported for the benchmark, opset %d" % onnx_export.DEFAULT_OPSET
    # a model without an encoder network encodes with its analysis transform alone
    enc_params = (sum(p.numel() for p in net.encoder.parameters()) if net.encoder is not None
                  else int(net.analysis_weight.numel() + net.analysis_bias.numel()))
    info.update(model_dir=model_dir, factor=net.factor, codebook_size=net.codebook_size,
                embedder=params.get("embedder") or {}, encoder_params=enc_params)
    return info


# --- children: one method, one size, fresh process -----------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakRSS:
    """Peak growth of the resident set over a block: VmHWM reset by clear_refs, else sampled."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.method = "VmHWM - VmRSS (clear_refs)"
        except OSError:
            self.method = "sampled VmRSS every 2 ms"
        self.base = self.peak = _status_kib("VmRSS")
        self._stop = threading.Event()
        if self.method.startswith("sampled"):
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _status_kib("VmRSS"))

    def __exit__(self, *exc):
        self._stop.set()
        if self.method.startswith("sampled"):
            self._thread.join()
        else:
            self.peak = _status_kib("VmHWM")
        self.delta_mib = (self.peak - self.base) / 1024.0


def frame_path(workdir: str, width: int, height: int) -> str:
    return os.path.join(workdir, "frame_%dx%d.npy" % (width, height))


def load_child_frame(workdir: str, width: int, height: int):
    from rawdiff.raw import read_raw

    return read_raw(frame_path(workdir, width, height))


def load_codec(backend: str, model_dir: str, threads: int, encode_rows=None):
    """The codec the nodes and the command line would run, on the CPU (``encode_rows``: None
    keeps the codec's default)."""
    from rawdiff.codec import Codec
    from rawdiff.codec.limits import DEFAULT_ENCODE_ROWS

    return Codec.load(model_dir, device="cpu", backend=backend, threads=threads or None,
                      encode_rows=DEFAULT_ENCODE_ROWS if encode_rows is None else encode_rows)


def make_encoder(method: str, model_dir: str, threads: int, encode_rows=None, quality=None, static=False):
    """(function of a frame, description of the engine)."""
    if method == "torch":
        import torch

        codec = load_codec("torch", model_dir, threads, encode_rows)
        return codec.encode_codes, {"threads": torch.get_num_threads(), "engine": "torch %s" % torch.__version__,
                                    "encode_rows": codec.strip_rows}
    if method == "onnx":
        import onnxruntime as ort

        from rawdiff.codec.onnx_runtime import session_provider

        codec = load_codec("onnx", model_dir, threads, encode_rows)
        return codec.encode_codes, {"threads": threads or os.cpu_count(),
                                      "provider": session_provider(codec.onnx_session),
                                      "engine": "onnxruntime %s" % ort.__version__,
                                      "encode_rows": codec.strip_rows}
    if method == "compress":
        # the whole vehicle path with encoder.onnx: render parameters (a gray-world estimate:
        # the frame's as-shot gains are dropped, as for a camera without ~wb_gains), white
        # balance, colour statistics, the encoder, the range coder, the bitstream
        import onnxruntime as ort

        codec = load_codec("onnx", model_dir, threads, encode_rows)
        codec.adaptive_coding = not static
        quality = codec.check_quality(quality)

        def compress(frame):
            return codec.compress(frame.copy(wb_gains=None), quality=quality)

        return compress, {"threads": threads or os.cpu_count(), "engine": "onnxruntime %s" % ort.__version__,
                          "encode_rows": codec.strip_rows, "quality": quality,
                          "coding": "adaptive" if codec.adaptive_coding else "static"}
    if method == "jpeg":
        import cv2

        if threads:
            cv2.setNumThreads(threads)
        cache = {}

        def encode(frame):
            if "lut" not in cache:  # built once per camera, like a vehicle's ISP table
                black = float(np.mean(frame.black_level))
                x = np.clip((np.arange(65536, dtype=np.float64) - black) / (frame.white_level - black), 0, 1)
                cache["lut"] = np.round(255.0 * x ** (1 / 2.2)).astype(np.uint8)
                cache["code"] = getattr(cv2, "COLOR_Bayer%s2BGR" % OPENCV_BAYER[frame.cfa])
            bgr = cv2.demosaicing(cache["lut"][frame.mosaic], cache["code"])
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError("cv2.imencode failed")
            return buf

        return encode, {"threads": cv2.getNumThreads(), "engine": "OpenCV %s" % cv2.__version__}
    raise ValueError(method)


def child(args) -> None:
    width, height = args.size
    frame = load_child_frame(args.workdir, width, height)
    encode, info = make_encoder(args.child, args.model, args.threads, args.encode_rows, args.quality,
                                args.static_tables)
    with PeakRSS() as mem:
        out = encode(frame)  # warm-up: allocations, onnxruntime's first-run planning
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = encode(frame)
            times.append(time.perf_counter() - t0)
    result = dict(info, method=args.child, width=width, height=height, times_s=times,
                  median_s=statistics.median(times), fps=1.0 / statistics.median(times),
                  peak_mib=round(mem.delta_mib, 1), base_rss_mib=round(mem.base / 1024.0, 1), memory=mem.method)
    if args.child == "compress":
        result["bytes"] = len(out)
        result["bpp"] = 8.0 * len(out) / (width * height)
    if args.child == "jpeg":
        result["bytes"] = int(out.size)
        result["bpp"] = 8.0 * out.size / (width * height)
    else:
        # the code grids of every quantizer stage, one after the other
        flat = np.concatenate([np.ravel(g) for g in (out if isinstance(out, list) else [out])])
        np.save(os.path.join(args.workdir, "grid_%s_%dx%d.npy" % (args.child, width, height)), flat)
    print(json.dumps(result))


# --- profile (child) -----------------------------------------------------------------------------


def _conv_macs(module, out) -> float:
    """Multiply-accumulates of a Conv2d: every output value sums C_in/groups x kh x kw products."""
    per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
    return float(out.numel()) * per_output


def profile_torch(args) -> dict:
    """Per-layer time (forward hooks, median over repeats) and MACs; top ops (torch profiler)."""
    import torch

    width, height = args.size
    frame = load_child_frame(args.workdir, width, height)
    codec = load_codec("torch", args.model, args.threads)
    net = codec.embedder
    enc = net.encoder
    layers = [("encoder.%s" % name, getattr(enc, name)) for name in ("conv_in",) if hasattr(enc, name)]
    layers += [("encoder.blocks.%d %s" % (i, type(b).__name__), b) for i, b in enumerate(enc.blocks)]
    layers += [("encoder.%s" % name, getattr(enc, name)) for name in ("context", "norm_out", "conv_out")
               if getattr(enc, name, None) is not None]
    times = {name: [] for name, _ in layers}
    macs = {name: 0.0 for name, _ in layers}
    shapes = {}
    start = {}
    counting = [True]  # MACs of the first (warm-up) pass only
    def timing_hooks(name):
        def before(module, inputs):
            start[name] = time.perf_counter()

        def after(module, inputs, output):
            times[name].append(time.perf_counter() - start[name])
            shapes[name] = list(output.shape[1:])

        def count(module, inputs, output):
            if counting[0]:
                macs[name] += _conv_macs(module, output)

        return before, after, count

    for name, module in layers:
        before, after, count = timing_hooks(name)
        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)
        for sub in module.modules():
            if isinstance(sub, torch.nn.Conv2d):
                sub.register_forward_hook(count)
    # the codec's own encode_indices runs; the network's two steps are timed in place, the
    # rest of the call is the codec's preparation of the planes (and the copy of the grid)
    stages = {"to_planes + pad": [], "encoder (whole)": [], "quantize (nearest code)": []}
    step = {}

    def timed(fn, key):
        def run(*a, **kw):
            t = time.perf_counter()
            out = fn(*a, **kw)
            step[key] = time.perf_counter() - t
            return out

        return run

    net.encode = timed(net.encode, "encoder (whole)")
    net.quantize.encode_indices = timed(net.quantize.encode_indices, "quantize (nearest code)")
    for r in range(args.repeats + 1):
        t0 = time.perf_counter()
        codec.encode_indices(frame)
        total = time.perf_counter() - t0
        if r == 0:  # warm-up
            counting[0] = False
            for v in times.values():
                v.clear()
            continue
        stages["encoder (whole)"].append(step["encoder (whole)"])
        stages["quantize (nearest code)"].append(step["quantize (nearest code)"])
        stages["to_planes + pad"].append(total - step["encoder (whole)"] - step["quantize (nearest code)"])
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        codec.encode_indices(frame)
    rows = [{"layer": name, "out": shapes.get(name), "gmac": macs[name] / 1e9,
             "ms": 1e3 * statistics.median(times[name])} for name, _ in layers]
    enc_ms = 1e3 * statistics.median(stages["encoder (whole)"])
    rows.append({"layer": "stem (pixel_unshuffle) + final SiLU", "out": None, "gmac": 0.0,
                 "ms": max(0.0, enc_ms - sum(r["ms"] for r in rows))})
    rows.append({"layer": "quantize (nearest code)", "out": None, "gmac": 0.0,
                 "ms": 1e3 * statistics.median(stages["quantize (nearest code)"])})
    rows.append({"layer": "to_planes + pad (numpy)", "out": None, "gmac": 0.0,
                 "ms": 1e3 * statistics.median(stages["to_planes + pad"])})
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return {"engine": "torch", "threads": torch.get_num_threads(), "layers": rows,
            "ops": [{"op": e.key, "ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in ops]}


def _ort_layer(name: str, seen_encoder: bool) -> str:
    import re

    m = re.match(r"^/encoder/(blocks/blocks\.\d+|blocks\.\d+|conv_in|norm_out|conv_out|context)/", name)
    if m:
        return "encoder." + m.group(1).replace("blocks/", "")
    if name.startswith("/encoder/"):
        return "encoder (between the named layers: activation, FiLM)"
    if name.startswith("/"):
        return "quantize (nearest code)" if seen_encoder else "stem (pixel_unshuffle)"
    return "layout reorders (NCHWc)"


def profile_onnx(args) -> dict:
    """Per-layer and per-operator time from onnxruntime's profiler (mean over repeats)."""
    import onnxruntime as ort

    from rawdiff.codec import onnx_runtime

    width, height = args.size
    frame = load_child_frame(args.workdir, width, height)
    codec = load_codec("onnx", args.model, args.threads)
    # the codec's own path, with its session swapped for one that profiles the same graph
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(args.workdir, "ort_profile")
    if args.threads:
        options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(os.path.join(args.model, onnx_runtime.ONNX_FILE), options,
                                   providers=["CPUExecutionProvider"])
    codec.onnx_session = session
    for _ in range(args.repeats + 1):
        codec.encode_indices(frame)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]  # no warm-up
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    layers, ops = {}, {}
    for a, b in runs:
        seen_encoder = False  # top-level nodes before the encoder are the stem, after it the code search
        for e in (e for e in nodes if a <= e["ts"] <= b):
            name = e["name"][: -len("_kernel_time")]
            seen_encoder = seen_encoder or name.startswith("/encoder/")
            layer = _ort_layer(name, seen_encoder)
            layers[layer] = layers.get(layer, 0.0) + e["dur"] / 1e3 / len(runs)
            op = e["args"].get("op_name", "?")
            ops[op] = ops.get(op, 0.0) + e["dur"] / 1e3 / len(runs)
    total = [(b - a) / 1e3 for a, b in runs]
    return {"engine": "onnxruntime", "run_ms": statistics.median(total),
            "layers": [{"layer": k, "ms": v} for k, v in layers.items()],
            "ops": [{"op": k, "ms": v} for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:10]]}


# --- parent --------------------------------------------------------------------------------------


def run_child(args, method: str, size, info: dict, workdir: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, "--size", "%dx%d" % size,
           "--workdir", workdir, "--model", info["model_dir"], "--repeats", str(args.repeats)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.encode_rows is not None:
        cmd += ["--encode-rows", str(args.encode_rows)]
    if args.quality is not None:
        cmd += ["--quality", str(args.quality)]
    if args.static_tables:
        cmd.append("--static-tables")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit("benchmark child %s %dx%d failed:\n%s" % (method, size[0], size[1], proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(results: list, agreement: dict) -> str:
    by = {(r["method"], r["width"], r["height"]): r for r in results}
    lines = ["| frame | MP | (a) torch s/frame (fps) | (b) onnx s/frame (fps) | (b') compress s/frame (fps) "
             "| (c) demosaic+JPEG q80 s/frame (fps) | (a)/(c) | (b)/(c) | peak MiB a / b / b' / c "
             "| onnx codes = torch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    sizes = sorted({(r["width"], r["height"]) for r in results}, key=lambda s: s[0] * s[1])

    def cell(r):
        return "%.3f (%.2f)" % (r["median_s"], r["fps"]) if r else "-"

    def ratio(r, c):
        return "%.1fx" % (r["median_s"] / c["median_s"]) if r and c else "-"

    for w, h in sizes:
        a, b, bc, c = (by.get((m, w, h)) for m in METHODS)
        mem = " / ".join("%.0f" % r["peak_mib"] if r else "-" for r in (a, b, bc, c))
        agree = agreement.get("%dx%d" % (w, h))
        lines.append("| %dx%d | %.1f | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            w, h, w * h / 1e6, cell(a), cell(b), cell(bc), cell(c), ratio(a, c), ratio(b, c), mem,
            "%.3f %%" % (100 * agree) if agree is not None else "-"))
    return "\n".join(lines)


def profile_markdown(prof_t: dict, prof_o: dict, size) -> str:
    o_layers = {r["layer"]: r["ms"] for r in prof_o["layers"]}
    total_t = sum(r["ms"] for r in prof_t["layers"])
    lines = ["Profile at %dx%d (torch: %d threads, forward hooks; onnxruntime: its profiler)" % (
        size[0], size[1], prof_t["threads"]), "",
        "| layer | output (C, h, w) | GMAC | torch ms | torch GMAC/s | % of torch | onnx ms |",
        "|---|---|---|---|---|---|---|"]
    for r in prof_t["layers"]:
        name = r["layer"].split(" ")[0]
        onnx_ms = o_layers.pop(name, None)
        if onnx_ms is None:
            onnx_ms = o_layers.pop(r["layer"], None)
        rate = "%.1f" % (r["gmac"] / (r["ms"] / 1e3)) if r["gmac"] else ""
        lines.append("| %s | %s | %s | %.1f | %s | %.1f | %s |" % (
            r["layer"], "x".join(str(v) for v in r["out"]) if r["out"] else "", "%.2f" % r["gmac"] if r["gmac"]
            else "", r["ms"], rate, 100 * r["ms"] / total_t, "%.1f" % onnx_ms if onnx_ms is not None else ""))
    for name, ms in o_layers.items():
        lines.append("| %s (onnx only) | | | | | | %.1f |" % (name, ms))
    lines += ["", "torch ops (self CPU ms): " + ", ".join("%s %.0f" % (o["op"], o["ms"]) for o in prof_t["ops"]),
              "", "onnxruntime ops (ms): " + ", ".join("%s %.0f" % (o["op"], o["ms"]) for o in prof_o["ops"])]
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model directory (default: models/default if present, else untrained default.yaml)")
    p.add_argument("--repeats", type=int, default=5, help="timed frames per method and size (median reported)")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in SIZES])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--threads", type=int, default=0, help="threads for torch, onnxruntime and OpenCV (0: defaults)")
    p.add_argument("--json", help="also write the JSON results to this file")
    p.add_argument("--profile", action="store_true", help="per-layer profile of torch and onnx at the first size")
    p.add_argument("--config", help="an untrained embedder of this vqgan config (weights do not change the speed); "
                                    "config/models/default.yaml is the encoder the vehicle encoder replaced")
    p.add_argument("--embedder", nargs="*", default=[], help="key=value changes to the untrained embedder")
    p.add_argument("--encode-rows", type=int, default=None,
                   help="plane rows the codec encodes at a time (0: the whole frame; default: the codec's)")
    p.add_argument("--quality", type=int, help="operating point of the compress method (default: the model's)")
    p.add_argument("--static-tables", action="store_true",
                   help="the compress method codes with the prior's tables as they are (format version 6)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--size", type=parse_size, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.child:
        if args.child.startswith("profile-"):
            print(json.dumps(profile_torch(args) if args.child == "profile-torch" else profile_onnx(args)))
        else:
            child(args)
        return 0

    from rawdiff.raw.io import write_raw

    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rawdiff-bench-") as workdir:
        info = prepare_model(args, workdir)
        log("model: %s; onnx: %s" % (info["model"], info["onnx"]))
        for w, h in args.sizes:
            frame = make_frame(w, h)
            write_raw(frame, frame_path(workdir, w, h))
        results, agreement = [], {}
        for size in args.sizes:
            for method in args.methods:
                log("%s %dx%d ..." % (method, size[0], size[1]))
                r = run_child(args, method, size, info, workdir)
                log("  median %.3f s (%.2f fps), peak +%.0f MiB" % (r["median_s"], r["fps"], r["peak_mib"]))
                results.append(r)
            grids = [os.path.join(workdir, "grid_%s_%dx%d.npy" % (m, size[0], size[1])) for m in ("torch", "onnx")]
            if all(os.path.isfile(g) for g in grids):
                agreement["%dx%d" % size] = float(np.mean(np.load(grids[0]) == np.load(grids[1])))
        profiles = {}
        if args.profile:
            for engine in ("torch", "onnx"):
                log("profile %s %dx%d ..." % (engine, args.sizes[0][0], args.sizes[0][1]))
                profiles[engine] = run_child(args, "profile-" + engine, args.sizes[0], info, workdir)
    info.pop("model_dir")
    report = {"machine": dict(machine(), load_avg_before=load_before), "model": info, "repeats": args.repeats,
              "results": results, "onnx_torch_agreement": agreement, "wall_s": round(time.time() - started, 1),
              "ratios": {}}
    by = {(r["method"], r["width"], r["height"]): r for r in results}
    for (w, h) in args.sizes:
        c = by.get(("jpeg", w, h))
        for m in ("torch", "onnx"):
            if c and (m, w, h) in by:
                report["ratios"]["%s/jpeg %dx%d" % (m, w, h)] = by[(m, w, h)]["median_s"] / c["median_s"]
    if profiles:
        report["profile"] = profiles
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    mach = report["machine"]
    rows = sorted({r["encode_rows"] for r in results if "encode_rows" in r})
    print("\n%s, %d cores, load average %.1f before / %.1f after; %s; median of %d frames%s\n" % (
        mach["cpu"], mach["cores"], load_before[0], mach["load_avg"][0], info["model"], args.repeats,
        "; encoded in strips of %s plane rows (0: whole)" % "/".join(map(str, rows)) if rows else ""))
    print(markdown(results, agreement))
    if profiles:
        print("\n" + profile_markdown(profiles["torch"], profiles["onnx"], args.sizes[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
