"""Training data: the default corpus, paired RAW/RGB preparation, the torch dataset.

* :mod:`rawdiff.data.corpus`: which packaged photos make the default corpus;
* :mod:`rawdiff.data.sources`: paths (folders, lists, files) -> sources of a kind;
* :mod:`rawdiff.data.readers`: the registry of frame readers by source kind (``rawdiff.ros``
  adds the bag reader to it; the data layer never imports ROS);
* :mod:`rawdiff.data.frames`: the readers of photos and videos (unprocessed) and RAW files;
* :mod:`rawdiff.data.layout`: file names, the split by source group, index files, manifest;
* :mod:`rawdiff.data.prepare`: the build: sources -> RAW frames + ISP targets + split index files;
* :mod:`rawdiff.data.dataset`: ``RawRGBDataset`` / ``RawRGBDataModule`` (needs torch).

Submodules are imported on use, so ``rawdiff.data`` itself needs neither torch nor ROS.
"""
