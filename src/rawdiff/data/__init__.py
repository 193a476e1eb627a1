"""Training data: the default corpus, paired RAW/RGB preparation, the torch dataset.

* :mod:`rawdiff.data.corpus`: which packaged photos make the default corpus;
* :mod:`rawdiff.data.prepare`: sources -> RAW frames + ISP targets + split index files;
* :mod:`rawdiff.data.dataset`: ``RawRGBDataset`` / ``RawRGBDataModule`` (needs torch).

Submodules are imported on use, so ``rawdiff.data`` itself needs neither torch nor ROS.
"""
