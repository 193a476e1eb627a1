"""RAW sensor frames: the frame type, CSI-2 packing, readers, the reference ISP."""

from rawdiff.raw.frame import CFA_PATTERNS, RawFrame, mosaic_to_planes, planes_to_mosaic
from rawdiff.raw.io import read_raw

__all__ = ["CFA_PATTERNS", "RawFrame", "mosaic_to_planes", "planes_to_mosaic", "read_raw"]
