"""Two ways to run the nodes on a real roscore: the encoder node on a vehicle install (torch
cannot be imported, encoder.onnx runs) and the decoder node giving the RAW mosaic back
(``~output: bayer16``). Both must publish the bytes the library computes."""

import os
import sys

import numpy as np
import pytest
from ros_harness import LAUNCH, Collector, Launch, bayer_image, wait_for

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vehicle_site import vehicle_env  # noqa: E402  (test/, beside this folder)

pytestmark = pytest.mark.timeout(300)


def _publish_until(rospy, pub, msg, collector, match, timeout=120.0):
    """Publish ``msg`` until a message that ``match`` accepts arrives (the node may still load)."""
    wait_for(lambda: pub.get_num_connections() >= 1, timeout, 0.2, "the node to subscribe")
    got = []

    def arrived():
        got[:] = [m for m in collector.since(0) if match(m)]
        if not got:
            pub.publish(msg)
        return got

    return wait_for(arrived, timeout, 1.0, "the node's answer")[0]


def test_encoder_node_without_torch_publishes_the_full_install_s_codes(ros_node, launch_dir, onnx_model,
                                                                       tmp_path):
    from sensor_msgs.msg import Image

    from rawdiff.codec import Codec
    from rawdiff.msg import CompressedCodes
    from rawdiff.ros.transcode import encode_image

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = vehicle_env(tmp_path)["PYTHONPATH"]
    try:
        node = Launch(launch_dir, "vehicle-encoder", os.path.join(LAUNCH, "encoder.launch"), "camera:=vehicle",
                      "output:=/vehicle/compressed_codes", "backend:=onnx", "model:=" + onnx_model,
                      "black_level:=64", "white_level:=4095")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
    pub = ros_node.Publisher("/vehicle/image_raw", Image, queue_size=10)
    codes = Collector(ros_node, "/vehicle/compressed_codes", CompressedCodes)
    try:
        img = bayer_image(96, 128, stamp=ros_node.Time(42, 7), frame_id="vehicle_cam")
        got = _publish_until(ros_node, pub, img, codes, lambda m: m.header.stamp == img.header.stamp)
        node.check_alive()
        want, _ = encode_image(Codec.load(onnx_model, device="cpu", backend="onnx"), img, black_level=64,
                               white_level=4095)
        assert bytes(got.data) == bytes(want.data)
        # the node's start-up line: it ran encoder.onnx in a process without torch
        assert "backend onnx" in node.output() and "torch not installed" in node.output()
    finally:
        node.stop()
        codes.sub.unregister()
        pub.unregister()


def test_decoder_node_gives_the_raw_mosaic_as_bayer16(ros_node, launch_dir, fixture_model):
    from sensor_msgs.msg import Image

    from rawdiff.codec import Codec
    from rawdiff.msg import CompressedCodes
    from rawdiff.ros.transcode import encode_image

    codec = Codec.load(fixture_model, device="cpu", backend="torch")
    img = bayer_image(96, 128, encoding="bayer_grbg16", stamp=ros_node.Time(43, 8), frame_id="raw_cam")
    codes_msg, _ = encode_image(codec, img, black_level=64, white_level=4095)
    node = Launch(launch_dir, "raw-decoder", os.path.join(LAUNCH, "decoder.launch"), "input:=/raw/compressed_codes",
                  "output:=/raw/image_decoded", "output_encoding:=bayer16", "model:=" + fixture_model)
    pub = ros_node.Publisher("/raw/compressed_codes", CompressedCodes, queue_size=10)
    decoded = Collector(ros_node, "/raw/image_decoded", Image)
    try:
        got = _publish_until(ros_node, pub, codes_msg, decoded, lambda m: m.header.stamp == img.header.stamp)
        node.check_alive()
        want = codec.decompress_raw(bytes(codes_msg.data))
        assert got.encoding == "bayer_grbg16" and (got.height, got.width) == (96, 128)
        assert got.header.frame_id == "raw_cam"
        mosaic = np.frombuffer(bytes(got.data), dtype="<u2").reshape(96, 128)
        np.testing.assert_array_equal(mosaic, want.mosaic)
        assert mosaic.max() <= 4095
    finally:
        node.stop()
        decoded.sub.unregister()
        pub.unregister()
