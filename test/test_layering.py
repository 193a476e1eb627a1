"""The import layers of rawdiff: one direction of dependency, no cycle, ROS only in rawdiff.ros.

Every module under src/rawdiff is parsed (not imported) and every ``import`` is counted,
at the top of a module and inside functions alike. Bottom to top:

    0  raw, config, paths, outputs, device
    1  nn, diffusion, codec.bitstream, codec.entropy, codec.adaptive, codec.cell_means,
       codec.detail_stats, codec.encode_strips
       (coding), data
    2  codec.modeldir (the model directory), metrics, task_fidelity
    3  models
    4  codec (the runtime: codec.codec, and the package, which hands out Codec)
    5  training: train, texture_fit, deblock_fit, codec.prior_fit, export; eval
    6  ros, cli

A module may import its own unit, and units of its layer or below, never above; the graph
of units has no cycle. ``data`` sits with the building blocks because it needs only
``raw`` and ``config``; ``rawdiff.data`` never imports ``rawdiff.ros`` (bags reach it
through the frame-reader registry, :mod:`rawdiff.data.readers`). Only ``rawdiff.ros``
imports rospy, rosbag, cv_bridge, genpy, dynamic_reconfigure or message packages (and
``rawdiff.msg``, ``rawdiff.cfg``: what catkin generates).

``KNOWN`` lists the imports that break a rule today, each with the reason; fixing one means
deleting its entry (an entry that matches nothing fails the test, so the list only shrinks).
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")

# (module prefix, layer); the longest prefix that matches names a module's unit
UNITS = (
    ("rawdiff.raw", 0), ("rawdiff.config", 0), ("rawdiff.paths", 0), ("rawdiff.outputs", 0), ("rawdiff.device", 0),
    ("rawdiff.nn", 1), ("rawdiff.diffusion", 1), ("rawdiff.codec.bitstream", 1), ("rawdiff.codec.entropy", 1),
    ("rawdiff.codec.adaptive", 1), ("rawdiff.codec._adaptive", 1), ("rawdiff.codec.cell_means", 1),
    ("rawdiff.codec.detail_stats", 1), ("rawdiff.codec.encode_strips", 1),
    ("rawdiff.data", 1),
    ("rawdiff.codec.modeldir", 2), ("rawdiff.metrics", 2), ("rawdiff.task_fidelity", 2),
    ("rawdiff.models", 3),
    ("rawdiff.codec", 4),
    ("rawdiff.train", 5), ("rawdiff.texture_fit", 5), ("rawdiff.deblock_fit", 5), ("rawdiff.codec.prior_fit", 5),
    ("rawdiff.export", 5),
    ("rawdiff.eval", 5),
    ("rawdiff.ros", 6), ("rawdiff.cli", 6),
)
ROOT_PACKAGE = "rawdiff"  # __init__: a version and the namespace path, layer 0

ROS_MODULES = frozenset((
    "rospy", "rosbag", "rosgraph", "roslaunch", "rostest", "rostopic", "cv_bridge", "genpy", "genmsg",
    "sensor_msgs", "std_msgs", "diagnostic_msgs", "diagnostic_updater", "dynamic_reconfigure",
))
GENERATED = ("rawdiff.msg", "rawdiff.cfg")  # catkin's, in the devel space: ROS modules

# Imports that break a rule today, in files being reworked elsewhere: (importer, imported) -> why.
KNOWN: Dict[Tuple[str, str], str] = {}


class Import(NamedTuple):
    importer: str
    imported: str
    path: str
    line: int

    def where(self) -> str:
        return "%s:%d" % (os.path.relpath(self.path, ROOT), self.line)


def module_name(path: str, src: str = SRC) -> str:
    rel = os.path.relpath(path, src)[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def source_modules(src: str = SRC) -> Dict[str, str]:
    """{module name: file} of every module under src/rawdiff."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.path.join(src, "rawdiff")):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                out[module_name(path, src)] = path
    return out


def imports_of(module: str, path: str, known_modules: Set[str]) -> List[Import]:
    """Every import in a module, at any depth: ``from p import m`` counts as ``p.m`` when that
    is a module, else as ``p``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found: List[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = parent + ("." + base if base else "")
            for alias in node.names:
                full = "%s.%s" % (base, alias.name)
                found.append(Import(module, full if full in known_modules else base, path, node.lineno))
    return sorted(set(found), key=lambda i: (i.line, i.imported))  # one entry per module and line


def unit_of(module: str) -> Optional[Tuple[str, int]]:
    """(unit, layer) of an internal module; None for a module outside rawdiff."""
    if module == ROOT_PACKAGE:
        return ROOT_PACKAGE, 0
    if not module.startswith(ROOT_PACKAGE + "."):
        return None
    best = None
    for prefix, layer in UNITS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    if best is None:
        raise AssertionError("module %s has no layer: add its package to UNITS in %s" % (module, __file__))
    return best[0][len(ROOT_PACKAGE) + 1:], best[1]


def is_ros(imported: str) -> bool:
    return imported.split(".")[0] in ROS_MODULES or any(imported == g or imported.startswith(g + ".")
                                                        for g in GENERATED)


def check(src: str = SRC, known_imports: Optional[Dict[Tuple[str, str], str]] = None
          ) -> Tuple[List[str], List[str], List[str]]:
    """(new violations, known violations, stale known entries), each a list of lines."""
    known_imports = KNOWN if known_imports is None else known_imports
    modules = source_modules(src)
    new, known = [], []
    used_known = set()
    edges: Dict[Tuple[str, str], List[Import]] = {}
    for module, path in modules.items():
        unit, layer = unit_of(module)
        for imp in imports_of(module, path, set(modules)):
            if is_ros(imp.imported):
                if not module.startswith("rawdiff.ros"):
                    new.append("%s: %s imports %s: only rawdiff.ros imports ROS" % (imp.where(), module, imp.imported))
                continue
            target = unit_of(imp.imported)
            if target is None or target[0] == unit:
                continue
            key = (imp.importer, imp.imported)
            if key in known_imports:
                used_known.add(key)
                known.append("%s: %s -> %s (known: %s)" % (imp.where(), module, imp.imported, known_imports[key]))
                continue
            edges.setdefault((unit, target[0]), []).append(imp)
            if unit == "data" and target[0].startswith("ros"):
                new.append("%s: %s imports %s: rawdiff.data never imports rawdiff.ros (register a frame "
                           "reader instead)" % (imp.where(), module, imp.imported))
            elif target[1] > layer:
                new.append("%s: %s (%s, layer %d) imports %s (%s, layer %d): a lower layer never imports a "
                           "higher one" % (imp.where(), module, unit, layer, imp.imported, target[0], target[1]))
    for cycle in unit_cycles(edges):
        sites = ["%s %s -> %s" % (imp.where(), imp.importer, imp.imported)
                 for a, b in zip(cycle, cycle[1:] + cycle[:1]) for imp in edges.get((a, b), [])[:3]]
        new.append("import cycle between %s: %s" % (" -> ".join(cycle + cycle[:1]), "; ".join(sites)))
    stale = ["KNOWN entry %s -> %s matches no import any more: delete it" % key
             for key in sorted(set(known_imports) - used_known)]
    return new, known, stale


def unit_cycles(edges: Dict[Tuple[str, str], List[Import]]) -> List[List[str]]:
    """One cycle through each strongly connected group of units (Tarjan's algorithm)."""
    graph: Dict[str, List[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    groups: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(set(group), graph) for group in groups]


def _cycle_in(group: Set[str], graph: Dict[str, List[str]]) -> List[str]:
    """A shortest cycle through the first unit of a strongly connected group (breadth first)."""
    start = min(group)
    parent = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1]
            if w in group and w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError("no cycle through %s" % start)  # pragma: no cover - a group is strongly connected


def test_imports_go_down_the_layers_without_cycles_and_ros_stays_in_rawdiff_ros():
    new, known, stale = check()
    for line in known:
        print(line)
    for line in new + stale:
        print(line)
    assert not new and not stale, "\n" + "\n".join(new + stale)


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("import os\nfrom . import sibling\n\n\ndef f():\n    from rawdiff.ros.bag import open_bag\n"
                    "    import rospy\n")
    found = imports_of("rawdiff.data.mod", str(path), {"rawdiff.data.sibling", "rawdiff.ros.bag"})
    assert [(i.imported, i.line) for i in found] == [
        ("os", 1), ("rawdiff.data.sibling", 2), ("rawdiff.ros.bag", 6), ("rospy", 7)]
    assert unit_of("rawdiff.codec.entropy") == ("codec.entropy", 1)
    assert unit_of("rawdiff.codec") == ("codec", 4)
    assert unit_of("rawdiff.eval.report") == ("eval", 5)
    assert unit_of("numpy") is None


def test_the_checker_finds_a_cycle():
    imp = Import("a", "b", os.path.join(ROOT, "x.py"), 1)
    cycles = unit_cycles({("a", "b"): [imp], ("b", "c"): [imp], ("c", "a"): [imp], ("c", "d"): [imp]})
    assert cycles == [["a", "b", "c"]]
    assert unit_cycles({("a", "b"): [imp], ("b", "c"): [imp]}) == []


def test_the_checker_fails_on_a_wrong_direction_data_importing_ros_ros_outside_and_a_stale_entry(tmp_path):
    files = {
        "rawdiff/__init__.py": "",
        "rawdiff/data/__init__.py": "",
        "rawdiff/data/prepare.py": "def bag_frames():\n    from rawdiff.ros.bag import iter_raw_frames\n",
        "rawdiff/ros/__init__.py": "",
        "rawdiff/ros/bag.py": "import rosbag\nfrom rawdiff.data import prepare\n",
        "rawdiff/codec/__init__.py": "",
        "rawdiff/codec/entropy.py": "import numpy\n\n\ndef fit():\n    from rawdiff.codec.prior_fit import fit_prior\n",
        "rawdiff/codec/prior_fit.py": "from rawdiff.codec.entropy import fit\n",
        "rawdiff/raw/__init__.py": "from sensor_msgs.msg import Image\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    new, known, stale = check(str(tmp_path), {("rawdiff.x", "rawdiff.y"): "fixed long ago"})
    text = "\n".join(new)
    assert "data/prepare.py:2: rawdiff.data.prepare imports rawdiff.ros.bag: rawdiff.data never imports" in text
    assert "codec/entropy.py:5: rawdiff.codec.entropy (codec.entropy, layer 1) imports rawdiff.codec.prior_fit" in text
    assert "raw/__init__.py:1: rawdiff.raw imports sensor_msgs.msg: only rawdiff.ros imports ROS" in text
    assert "import cycle between codec.entropy -> codec.prior_fit -> codec.entropy" in text
    assert "import cycle between data -> ros -> data" in text  # ros -> data itself goes down
    assert "imports rosbag" not in text and len(new) == 5
    assert known == [] and stale == ["KNOWN entry rawdiff.x -> rawdiff.y matches no import any more: delete it"]
