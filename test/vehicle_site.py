"""A Python environment like the vehicle's: torch and the training packages cannot be imported.

:func:`vehicle_env` puts a ``sitecustomize.py`` first on ``PYTHONPATH`` whose import hook fails
every import of those packages, as where they are not installed (``requirements-vehicle.txt``).
The processes of a test (the CLI, roslaunch and its nodes) inherit it.
"""

from __future__ import annotations

import os
from pathlib import Path

TRAINING_ONLY = ("torch", "lightning", "torchvision", "torchmetrics", "scipy", "skimage", "sklearn")


# Installed as sitecustomize.py on PYTHONPATH: every import of a training-only package fails,
# as it does where that package is not installed.
BLOCKER = '''import sys


class _NotOnTheVehicle:
    blocked = %r

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError("No module named %%r (vehicle install)" %% name, name=name)
        return None


sys.meta_path.insert(0, _NotOnTheVehicle())
''' % (TRAINING_ONLY,)


def vehicle_env(tmp_path: Path) -> dict:
    """The environment of a process in which torch and the training packages cannot be imported."""
    folder = tmp_path / "vehicle-site"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env
