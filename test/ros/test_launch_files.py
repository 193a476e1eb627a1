"""Launch files and parameter files: arguments and defaults as the issue lists them,
config/*.yaml equal to the nodes' defaults, and what roslaunch makes of them (no roscore)."""

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
import yaml
from ros_harness import LAUNCH, REPO

from rawdiff.ros import decoder_node, encoder_node

FIND_MODEL = "$(find rawdiff)/models/default"
ENCODER_ARGS = {"camera": "camera", "input": "image_raw", "output": "/compressed_codes", "model": FIND_MODEL,
                "backend": "auto", "threads": "0", "encode_rows": "576", "adaptive_coding": "true",
                "device": "auto", "cfa": "",
                "black_level": "0", "white_level": "0", "input_format": "", "camera_info_period": "1.0",
                "expected_rate": "0", "max_delay": "1.0", "params_file": ""}
DECODER_ARGS = {"input": "/compressed_codes", "output": "/camera/image_decoded", "model": FIND_MODEL,
                "mode": "fast", "steps": "4", "seed": "0", "realism": "-1", "device": "auto", "camera_info": "",
                "expected_rate": "0", "max_delay": "1.0"}

needs_roslaunch = pytest.mark.skipif(shutil.which("roslaunch") is None, reason="roslaunch not on PATH")


def _args(name):
    root = ET.parse(os.path.join(LAUNCH, name)).getroot()
    return {a.get("name"): a.get("default") for a in root.iter("arg") if a.get("default") is not None}


@pytest.mark.parametrize("name, expected", [("encoder.launch", ENCODER_ARGS), ("decoder.launch", DECODER_ARGS)])
def test_launch_args_and_defaults(name, expected):
    args = _args(name)
    for key, value in expected.items():
        assert args.get(key) == value, (key, args.get(key))


def test_pipeline_launch_passes_both_and_has_bag_and_record():
    args = _args("pipeline.launch")
    assert set(ENCODER_ARGS) - {"output", "params_file"} <= set(args)
    assert set(DECODER_ARGS) - {"input", "camera_info"} <= set(args)
    assert args["bag"] == "" and args["record"] == "" and args["codes"] == "/compressed_codes"
    includes = [i.get("file") for i in ET.parse(os.path.join(LAUNCH, "pipeline.launch")).getroot().iter("include")]
    assert includes == ["$(find rawdiff)/launch/encoder.launch", "$(find rawdiff)/launch/decoder.launch"]


@pytest.mark.parametrize("module, yaml_name", [(encoder_node, "encoder.yaml"), (decoder_node, "decoder.yaml")])
def test_config_yaml_declares_the_node_defaults(module, yaml_name):
    with open(os.path.join(REPO, "config", yaml_name)) as f:
        declared = yaml.safe_load(f)
    assert declared == module.DEFAULTS
    for name in module.DEFAULTS:  # every parameter is documented in the node's docstring
        assert "``~%s``" % name in module.__doc__, name


def _roslaunch(*args):
    proc = subprocess.run(["roslaunch"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                          env=dict(os.environ, ROS_HOME=os.environ.get("ROS_HOME", "/tmp/rawdiff-test-ros-home")))
    assert proc.returncode == 0, proc.stdout.decode()
    return proc.stdout.decode()


@needs_roslaunch
def test_encoder_launch_without_args_reads_camera_image_raw_and_publishes_compressed_codes():
    out = _roslaunch("--args", "/camera/rawdiff_encoder", os.path.join(LAUNCH, "encoder.launch"))
    assert 'ROS_NAMESPACE="/camera"' in out  # image_raw -> /camera/image_raw
    assert "image_raw:=image_raw compressed_codes:=/compressed_codes" in out
    params = yaml.safe_load(_roslaunch("--dump-params", os.path.join(LAUNCH, "encoder.launch"),
                                       "black_level:=256", "white_level:=4095"))
    assert params["/camera/rawdiff_encoder/black_level"] == 256
    assert params["/camera/rawdiff_encoder/white_level"] == 4095
    assert params["/camera/rawdiff_encoder/queue_size"] == 1
    assert params["/camera/rawdiff_encoder/model"].endswith("/models/default")
    params = yaml.safe_load(_roslaunch("--dump-params", os.path.join(LAUNCH, "encoder.launch"),
                                       "black_level:=[64, 64, 65, 64]", "cfa:=GRBG", "input_format:=raw12p"))
    assert params["/camera/rawdiff_encoder/black_level"] == [64, 64, 65, 64]
    assert params["/camera/rawdiff_encoder/cfa"] == "GRBG"


@needs_roslaunch
def test_decoder_launch_params():
    out = _roslaunch("--args", "/rawdiff_decoder", os.path.join(LAUNCH, "decoder.launch"))
    assert "compressed_codes:=/compressed_codes image_decoded:=/camera/image_decoded" in out
    params = yaml.safe_load(_roslaunch("--dump-params", os.path.join(LAUNCH, "decoder.launch"),
                                       "mode:=diffusion", "steps:=8", "seed:=3", "realism:=0.5"))
    assert (params["/rawdiff_decoder/mode"], params["/rawdiff_decoder/steps"], params["/rawdiff_decoder/seed"],
            params["/rawdiff_decoder/realism"]) == ("diffusion", 8, 3, 0.5)
    assert (params["/rawdiff_decoder/max_pixels"], params["/rawdiff_decoder/tile"]) == (33667072, 256)
    params = yaml.safe_load(_roslaunch("--dump-params", os.path.join(LAUNCH, "decoder.launch"),
                                       "max_pixels:=1000000", "tile:=0", "queue_size:=16"))
    assert (params["/rawdiff_decoder/max_pixels"], params["/rawdiff_decoder/tile"],
            params["/rawdiff_decoder/queue_size"]) == (1000000, 0, 16)


@needs_roslaunch
def test_pipeline_launch_plays_after_the_chain_is_up_and_records():
    path = os.path.join(LAUNCH, "pipeline.launch")
    assert _roslaunch("--nodes", path).split() == ["/camera/rawdiff_encoder", "/rawdiff_decoder"]
    nodes = _roslaunch("--nodes", path, "bag:=/data/camera.bag", "record:=/data/out.bag").split()
    assert nodes == ["/camera/rawdiff_encoder", "/rawdiff_decoder", "/rawdiff_player", "/rawdiff_recorder"]
    play = _roslaunch("--args", "/rawdiff_player", path, "bag:=/data/camera.bag")
    assert "--wait-for-subscribers --bags /data/camera.bag --topics /camera/image_raw /camera/camera_info" in play
    record = _roslaunch("--args", "/rawdiff_recorder", path, "record:=/data/out.bag")
    assert ("-O /data/out.bag /compressed_codes /camera/image_decoded /compressed_codes/camera_info "
            "/camera/decoded/camera_info") in record
    params = yaml.safe_load(_roslaunch("--dump-params", path, "bag:=/data/camera.bag", "record:=/data/out.bag"))
    assert params["/camera/rawdiff_encoder/wait_for_subscribers"] == 2  # decoder and recorder
    assert params["/rawdiff_decoder/wait_for_subscribers"] == 1  # recorder
    params = yaml.safe_load(_roslaunch("--dump-params", path, "bag:=/data/camera.bag", "queue_size:=16"))
    assert params["/camera/rawdiff_encoder/queue_size"] == params["/rawdiff_decoder/queue_size"] == 16
    params = yaml.safe_load(_roslaunch("--dump-params", path, "bag:=/data/camera.bag"))
    assert params["/camera/rawdiff_encoder/wait_for_subscribers"] == 1
    assert params["/rawdiff_decoder/wait_for_subscribers"] == 0
    params = yaml.safe_load(_roslaunch("--dump-params", path))
    assert params["/camera/rawdiff_encoder/wait_for_subscribers"] == 0  # live camera: no waiting
    assert params["/rawdiff_decoder/wait_for_subscribers"] == 0
    # one master: the camera's /camera/camera_info is the camera's, the decoded one goes beside it
    assert params["/rawdiff_decoder/camera_info_topic"] == "/camera/decoded/camera_info"
    params = yaml.safe_load(_roslaunch("--dump-params", path, "expected_rate:=30", "max_delay:=0"))
    assert params["/camera/rawdiff_encoder/expected_rate"] == params["/rawdiff_decoder/expected_rate"] == 30.0
    assert params["/camera/rawdiff_encoder/max_delay"] == params["/rawdiff_decoder/max_delay"] == 0.0


@needs_roslaunch
def test_cameras_launch_starts_an_encoder_per_camera_namespace_and_mirrors_the_decoders():
    path = os.path.join(LAUNCH, "cameras.launch")
    assert _roslaunch("--nodes", path, "cameras:=front, left rear").split() == [
        "/front/rawdiff_encoder", "/left/rawdiff_encoder", "/rear/rawdiff_encoder"]
    assert _roslaunch("--nodes", path, "cameras:=front rear", "encode:=false", "decode:=true").split() == [
        "/front/rawdiff_decoder", "/rear/rawdiff_decoder"]
    assert sorted(_roslaunch("--nodes", path, "cameras:=front rear", "decode:=true").split()) == [
        "/front/rawdiff_decoder", "/front/rawdiff_encoder", "/rear/rawdiff_decoder", "/rear/rawdiff_encoder"]
    enc = _roslaunch("--args", "/rear/rawdiff_encoder", path, "cameras:=front rear")
    assert 'ROS_NAMESPACE="/rear"' in enc and "image_raw:=image_raw compressed_codes:=/rear/compressed_codes" in enc
    dec = _roslaunch("--args", "/rear/rawdiff_decoder", path, "cameras:=front rear", "decode:=true")
    assert 'ROS_NAMESPACE="/rear"' in dec
    assert "compressed_codes:=/rear/compressed_codes image_decoded:=/rear/image_decoded" in dec
    # receiving side (its own master): the decoded camera_info beside the image, /<camera>/camera_info;
    # both sides on one master: /<camera>/decoded/camera_info, as pipeline.launch
    params = yaml.safe_load(_roslaunch("--dump-params", path, "cameras:=front rear", "encode:=false",
                                       "decode:=true", "mode:=diffusion", "expected_rate:=10"))
    assert params["/rear/rawdiff_decoder/camera_info_topic"] == ""
    assert params["/rear/rawdiff_decoder/mode"] == "diffusion"
    assert params["/front/rawdiff_decoder/expected_rate"] == 10.0
    params = yaml.safe_load(_roslaunch("--dump-params", path, "cameras:=front rear", "decode:=true"))
    assert params["/rear/rawdiff_decoder/camera_info_topic"] == "/rear/decoded/camera_info"


@needs_roslaunch
def test_cameras_launch_shares_the_args_and_per_camera_files_have_the_last_word(tmp_path):
    (tmp_path / "front.yaml").write_text("black_level: 64\ncfa: GRBG\n")
    (tmp_path / "rear.yaml").write_text("black_level: [60, 61, 62, 63]\n")
    path = os.path.join(LAUNCH, "cameras.launch")
    params = yaml.safe_load(_roslaunch("--dump-params", path, "cameras:=front rear", "white_level:=4095",
                                       "black_level:=5", "params_dir:=%s" % tmp_path))
    assert params["/front/rawdiff_encoder/black_level"] == 64 and params["/front/rawdiff_encoder/cfa"] == "GRBG"
    assert params["/rear/rawdiff_encoder/black_level"] == [60, 61, 62, 63] and params["/rear/rawdiff_encoder/cfa"] == ""
    assert params["/front/rawdiff_encoder/white_level"] == params["/rear/rawdiff_encoder/white_level"] == 4095
    params = yaml.safe_load(_roslaunch("--dump-params", path, "cameras:=front rear", "black_level:=5"))
    assert params["/front/rawdiff_encoder/black_level"] == params["/rear/rawdiff_encoder/black_level"] == 5
    # a missing camera file, a camera named twice, no cameras: roslaunch refuses, naming it
    for args, fragment in ((("cameras:=front side", "params_dir:=%s" % tmp_path), "side.yaml"),
                           (("cameras:=front front",), "multiple nodes named [/front/rawdiff_encoder]"),
                           ((), "cameras")):
        proc = subprocess.run(["roslaunch", "--nodes", path] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=120)
        assert proc.returncode != 0 and fragment in proc.stdout.decode(), proc.stdout.decode()


@pytest.mark.skipif(shutil.which("rosmsg") is None, reason="rosmsg not on PATH")
def test_rosmsg_shows_the_message():
    out = subprocess.run(["rosmsg", "show", "rawdiff/CompressedCodes"], stdout=subprocess.PIPE, timeout=60,
                         check=True).stdout.decode()
    for field in ("std_msgs/Header header", "string model_id", "string source_encoding", "uint32 height",
                  "uint32 width", "uint16 code_height", "uint16 code_width", "uint8[] data"):
        assert field in out


@needs_roslaunch
def test_launch_files_are_found_by_package_name():
    """`roslaunch rawdiff encoder.launch` (and the others) from a shell that sourced build/env.sh."""
    for name, args in (("encoder.launch", []), ("decoder.launch", []), ("pipeline.launch", []),
                       ("cameras.launch", ["cameras:=front rear"])):
        proc = subprocess.run(["roslaunch", "--files", "rawdiff", name] + args, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=120)
        out = proc.stdout.decode()
        if "multiple files named" in out:
            pytest.fail("`roslaunch rawdiff %s` is ambiguous: the catkin workspace link %s points back into the "
                        "repository that contains it, and roslaunch's file search (os.walk, following links) "
                        "finds the file again at every level; keep the workspace outside the repository or "
                        "under a dot-directory (e.g. build/.ws), which the search skips" % (
                            name, os.path.join(REPO, "build", "ws", "src", "rawdiff")))
        assert proc.returncode == 0, out
        # --files lists the file and everything it includes, in no fixed order
        assert any(os.path.samefile(f, os.path.join(LAUNCH, name)) for f in out.split()), out


def test_encoder_threads_parameter(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert encoder_node.encoder_threads(0) is None and encoder_node.encoder_threads("3") == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert encoder_node.encoder_threads(0) == 2 and encoder_node.encoder_threads(4) == 4
    with pytest.raises(ValueError, match="~threads must be 0"):
        encoder_node.encoder_threads(-1)
    with pytest.raises(ValueError, match="~threads must be an integer"):
        encoder_node.encoder_threads("many")


def test_encoder_encode_rows_parameter():
    from rawdiff.codec.limits import check_encode_rows

    assert check_encode_rows(0, "~encode_rows") == 0 and check_encode_rows("256", "~encode_rows") == 256
    with pytest.raises(ValueError, match="~encode_rows must be 0 .whole frames. or a positive number"):
        check_encode_rows(-8, "~encode_rows")
    with pytest.raises(ValueError, match="~encode_rows must be a number of plane rows"):
        check_encode_rows("many", "~encode_rows")


def test_encoder_adaptive_coding_parameter():
    assert encoder_node.check_flag(True, "~adaptive_coding") is True
    assert encoder_node.check_flag("false", "~adaptive_coding") is False  # a hand-set string, not bool("false")
    assert encoder_node.check_flag(" True ", "~adaptive_coding") is True
    for bad in ("no", 1, None):
        with pytest.raises(ValueError, match="~adaptive_coding must be true or false"):
            encoder_node.check_flag(bad, "~adaptive_coding")
    assert encoder_node.coding_status(True) == "adaptive (format version 9, compiled)"
    assert encoder_node.coding_status(False).startswith("static tables")
