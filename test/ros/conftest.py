"""Fixtures of the ROS integration tests: a real roscore on a free port, one rospy node
in the test process, the fixture model and another model (other weights, other id).

Every process started here (roscore, roslaunch and their nodes) runs in its own process
group and is stopped by its fixture's finalizer; logs and ROS_HOME live under tmp.
"""

import json
import os
import shutil

import pytest
from ros_harness import FIXTURE_MODEL, ros_unavailable

from rawdiff.ros.tools.processes import ros_environment, start_roscore


@pytest.fixture(scope="session")
def ros_master(tmp_path_factory):
    """A roscore on a free port; ROS_MASTER_URI, ROS_HOME and ROS_LOG_DIR point at it and
    at tmp for the test process and everything it starts."""
    reason = ros_unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("ros")
    saved = {k: os.environ.get(k) for k in ("ROS_MASTER_URI", "ROS_HOME", "ROS_LOG_DIR", "ROS_HOSTNAME", "ROS_IP")}
    env = ros_environment(str(root))
    os.environ.update({k: env[k] for k in ("ROS_MASTER_URI", "ROS_HOME", "ROS_LOG_DIR", "ROS_HOSTNAME")})
    os.environ.pop("ROS_IP", None)
    core = None
    try:
        core = start_roscore(env, str(root / "roscore.log"))
        yield {"uri": os.environ["ROS_MASTER_URI"], "root": root}
    finally:
        if core is not None:
            core.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def ros_node(ros_master):
    """The test process's rospy node (rospy allows one per process)."""
    import rospy

    rospy.init_node("rawdiff_test", anonymous=True, disable_signals=True)
    yield rospy
    rospy.signal_shutdown("tests done")


@pytest.fixture(scope="session")
def launch_dir(ros_master):
    path = ros_master["root"] / "launch_logs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def fixture_model():
    return FIXTURE_MODEL


@pytest.fixture(scope="session")
def other_model(tmp_path_factory):
    """The fixture model with slightly changed weights: another model_id."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from rawdiff.codec.modeldir import compute_model_id

    out = tmp_path_factory.mktemp("other") / "model"
    shutil.copytree(FIXTURE_MODEL, out)
    path = str(out / "embedder.safetensors")
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k, v in tensors.items() if v.dtype == torch.float32 and v.numel() > 16)
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, path, metadata=metadata)
    meta = json.loads((out / "model.json").read_text())
    meta["model_id"] = compute_model_id(str(out))
    (out / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return str(out)
