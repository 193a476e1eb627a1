"""Bitstream container, entropy coding of code indices, and the :class:`Codec`.

``Codec`` is imported on first use, so ``rawdiff.codec.bitstream`` (``rawdiff info``)
does not load torch.
"""

__all__ = ["Codec"]


def __getattr__(name):
    if name == "Codec":
        from rawdiff.codec.codec import Codec

        return Codec
    raise AttributeError("module 'rawdiff.codec' has no attribute %r" % name)
