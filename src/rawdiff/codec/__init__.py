"""Bitstream container, entropy coding of code indices, and the :class:`Codec`.

``Codec`` is imported on first use, so ``rawdiff.codec.bitstream`` (``rawdiff info``)
does not load torch. :func:`truncate` cuts a bitstream to a lower quality (its first
stages) without the model: the result is what encoding at that quality gives.
"""

from rawdiff.codec.bitstream import truncate

__all__ = ["Codec", "truncate"]


def __getattr__(name):
    if name == "Codec":
        from rawdiff.codec.codec import Codec

        return Codec
    raise AttributeError("module 'rawdiff.codec' has no attribute %r" % name)
