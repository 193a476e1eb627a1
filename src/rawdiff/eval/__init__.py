"""Evaluation: image metrics (:mod:`.metrics`), standard codecs as baselines
(:mod:`.baselines`), the ``rawdiff eval`` run (:mod:`.evaluate`) and its report (:mod:`.report`).

Submodules are imported on use, so that ``rawdiff --help`` does not load torch.
"""
