"""Evaluation: standard codecs as baselines (:mod:`.baselines`; the image metrics are
:mod:`rawdiff.metrics`, below the models), the measuring of a ``rawdiff eval`` run (:mod:`.evaluate`), the
rate-distortion maths over its results (:mod:`.rd`), its report (:mod:`.report`) and its
command line (:mod:`.cli`).

Submodules are imported on use, so that ``rawdiff --help`` does not load torch.
"""
