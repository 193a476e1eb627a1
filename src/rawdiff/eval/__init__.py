"""Evaluation: standard codecs as baselines (:mod:`.baselines`; the image metrics are
:mod:`rawdiff.metrics`, below the models), the frames and their references
(:mod:`.frames`), the measuring of a ``rawdiff eval`` run over every operating point of a
model (:mod:`.evaluate`, with the per-stage figures of :mod:`.stages`), the rate-distortion
maths over its results (:mod:`.rd`: BD-rates, the WebP target check), its report
(:mod:`.report`), the measured operating points written into the model directory
(:mod:`.operating_points`) and its command line (:mod:`.cli`).

Submodules are imported on use, so that ``rawdiff --help`` does not load torch.
"""
