"""Where the package's files are: its root (the catkin package) and the shipped model.

Not in ``__init__``: catkin's devel space runs that file under its own path.
"""

import os

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL_DIR = os.path.join(PACKAGE_DIR, "models", "default")
