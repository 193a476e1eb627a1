"""rawdiff's Python package.

On a ROS host catkin calls this through ``catkin_python_setup()``; on a training host
without ROS ``pip install -e .`` works the same (catkin_pkg is then optional).
"""

from setuptools import Extension, find_packages, setup

try:
    from catkin_pkg.python_setup import generate_distutils_setup
except ImportError:  # a GPU training host without ROS
    generate_distutils_setup = None

args = dict(
    packages=find_packages("src"),
    package_dir={"": "src"},
    # the adaptive range coder (rawdiff.codec.adaptive runs its Python reference without it)
    ext_modules=[Extension("rawdiff.codec._adaptive", ["src/rawdiff/codec/_adaptive.c"],
                           extra_compile_args=["-O3", "-std=c99"])],
)

if generate_distutils_setup is not None:
    args = generate_distutils_setup(**args)
else:
    args.update(name="rawdiff", version="0.1.0")

args.setdefault("entry_points", {})["console_scripts"] = ["rawdiff = rawdiff.cli:main"]
args["python_requires"] = ">=3.8"

setup(**args)
