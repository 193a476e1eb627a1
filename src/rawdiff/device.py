"""Device selection: ``auto`` takes the machine's accelerator when there is one."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the current accelerator (CUDA, ...) if available, else the CPU."""
    if name in (None, "", "auto"):
        accel = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return accel if accel is not None else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError("device %r is not a torch device: %s" % (name, exc)) from None
    if device.type != "cpu" and not torch.accelerator.is_available():
        raise ValueError("device %r requested but no accelerator is available" % name)
    return device
