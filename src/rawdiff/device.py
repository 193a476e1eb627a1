"""Device selection (``auto`` takes the machine's accelerator when there is one) and the
precision decoders run in on it."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the current accelerator (CUDA, ...) if available, else the CPU."""
    if name in (None, "", "auto"):
        accel = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return accel if accel is not None else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError("device %r is not a device name (auto, cpu, cuda, cuda:1, ...)" % (name,)) from None
    if device.type != "cpu" and not torch.accelerator.is_available():
        raise ValueError("device %r requested but no accelerator is available" % name)
    return device


#: what the networks of a decoder run in (``Codec.load(precision=...)``)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError("precision must be one of %s, got %r" % (", ".join(PRECISIONS), precision))
    return precision


def autocast_dtype(device: torch.device, precision: str = "auto") -> Optional[torch.dtype]:
    """The dtype the decoder networks run in under autocast on ``device``, or None for
    float32. ``auto``: bfloat16 on a CUDA device that has it, else float16 there (tensor
    cores; what half precision is for); float32 elsewhere, so a CPU decodes as the model was
    measured. ``bf16``/``fp16``/``fp32`` force it (bf16 on a CPU with AVX512-BF16 is faster,
    and not bit-identical to float32)."""
    if check_precision(precision) == "fp32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        with torch.cuda.device(device):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


#: how the decoder networks lay out their weights and activations (``Codec.load(memory_format=...)``)
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def check_memory_format(memory_format: str) -> str:
    """``memory_format`` if it is one of :data:`MEMORY_FORMATS`, else a ValueError naming them."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError("memory_format must be one of %s, got %r" % (", ".join(MEMORY_FORMATS), memory_format))
    return memory_format


def network_memory_format(device: torch.device, memory_format: str = "auto") -> torch.memory_format:
    """The torch memory format of the decoder networks on ``device``. ``auto``: channels_last
    (NHWC) on the CPU, where oneDNN's convolutions decoded a 1936x1112 frame 1.2 to 1.4 times
    faster than in NCHW (2-core AMD EPYC with AVX2; the outputs differ by float rounding only);
    NCHW (``contiguous``) elsewhere until measured: on CUDA, torch's GroupNorm (the networks
    have one after most convolutions) works in NCHW, so NHWC costs a copy at each norm that
    the half-precision convolutions would have to win back (``channels_last`` asks for it)."""
    if check_memory_format(memory_format) == "auto":
        return torch.channels_last if device.type == "cpu" else torch.contiguous_format
    return torch.channels_last if memory_format == "channels_last" else torch.contiguous_format


#: how the decoder networks are compiled (``Codec.load(compile_mode=...)``): not (``none``), or
#: ``torch.compile`` in one of its modes (``reduce-overhead`` adds CUDA graphs)
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`COMPILE_MODES`, else a ValueError naming them."""
    if mode not in COMPILE_MODES:
        raise ValueError("compile mode must be one of %s, got %r" % (", ".join(COMPILE_MODES), mode))
    return mode


def compiled(network: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``network`` compiled in place by ``torch.compile`` in ``mode`` (``none``: as it is). It
    compiles on its first call (tens of seconds) and again for each new input shape: what pays
    for a stream of frames of one size, not for one frame."""
    if check_compile_mode(mode) != "none":
        network.compile(mode=None if mode == "default" else mode)
    return network


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), as torch's CPU
    checks say; True where this torch has none of them (the configured precision is kept)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    checks = [check for check in checks if check is not None]
    return not checks or any(check() for check in checks)


def training_precision(precision, accelerator: str = "auto"):
    """The Lightning ``precision`` to train with: ``precision`` as configured, except that
    bf16 on a CPU without native bfloat16 becomes ``32-true``. There torch emulates bf16
    convolutions, which ran 100 times slower than float32 (a decoder forward of 8 crops of
    256x256: 42 s against 0.3 s on an AVX2-only AMD EPYC), where AVX512-BF16 made them 1.5
    to 2.6 times faster."""
    if precision is None or not str(precision).startswith("bf16"):
        return precision
    on_cpu = accelerator == "cpu" or (accelerator in (None, "", "auto") and not torch.accelerator.is_available())
    if on_cpu and not cpu_has_native_bf16():
        return "32-true"
    return precision


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing for None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
