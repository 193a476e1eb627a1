"""dynamic_reconfigure for a node whose parameter ranges depend on its model.

    cfg/Encoder.cfg --catkin (generate_dynamic_reconfigure_options)--> rawdiff.cfg.EncoderConfig
        (the widest ranges any model allows)
    narrowed(EncoderConfig, {"quality": (0, 4)}) --> the ranges of this node's model: what
        ``~parameter_descriptions`` (rqt_reconfigure, ``dynparam``) shows and what the server
        clamps to
    ClampingServer (dynamic_reconfigure.server.Server): a change outside the range is
        clamped, as the stock server does, and logged as a warning naming the range; a NaN
        is refused (the parameter keeps its value)

The stock Python server clamps without a word, so a client asking for quality 9 of a
4-quality model would not learn why it got 4; here the node's log says so.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace
from typing import Any, Callable, Dict, Tuple


def narrowed(config_type: Any, ranges: Dict[str, Tuple[Any, Any]]) -> SimpleNamespace:
    """A copy of a generated ``<Name>Config`` module with the (min, max) of ``ranges``."""
    from dynamic_reconfigure.encoding import extract_params

    description = copy.deepcopy(config_type.config_description)
    out = SimpleNamespace(config_description=description, min=dict(config_type.min), max=dict(config_type.max),
                          defaults=dict(config_type.defaults), level=dict(config_type.level),
                          type=dict(config_type.type), all_level=config_type.all_level)
    for param in extract_params(description):
        if param["name"] in ranges:
            low, high = ranges[param["name"]]
            param["min"], param["max"] = low, high
            out.min[param["name"]], out.max[param["name"]] = low, high
            out.defaults[param["name"]] = min(max(out.defaults[param["name"]], low), high)
    return out


def out_of_range(name: str, value: Any, low: Any, high: Any, note: str = "") -> str:
    """The warning for a requested value outside [low, high], or "" when it is inside."""
    if isinstance(value, float) and math.isnan(value):
        return "~%s NaN is not a number; kept the current value" % name
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < low or value > high:
            return "~%s %s is outside %s..%s%s; set to %s" % (
                name, value, low, high, " (%s)" % note if note else "", low if value < low else high)
    return ""


def clamping_server(config_type: Any, callback: Callable, warn: Callable[[str], None],
                    notes: Dict[str, str]):
    """A ``dynamic_reconfigure.server.Server`` of ``config_type`` (e.g. :func:`narrowed`'s)
    that warns through ``warn`` when it clamps a change (``notes``: what a parameter's
    range means, for the warning) and refuses NaN."""
    from dynamic_reconfigure.server import Server

    class ClampingServer(Server):
        def update_configuration(self, changes):
            changes = dict(changes)
            for name, value in list(changes.items()):
                if name not in config_type.min:
                    continue
                text = out_of_range(name, value, config_type.min[name], config_type.max[name], notes.get(name, ""))
                if text:
                    warn(text)
                    if isinstance(value, float) and math.isnan(value):
                        del changes[name]
            return super().update_configuration(changes)

    return ClampingServer(config_type, callback)


__all__ = ["clamping_server", "narrowed", "out_of_range"]
