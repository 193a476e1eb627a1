"""``make demo``: the whole pipeline on a bag of RAW frames, with a report.

    vtest.avi (opencv-doc) --unprocess--> camera.bag (bayer_rggb16, 12 bit, 10 Hz)
    the codec on the bag's first frame, in this process --> encode and decode time --> play rate
    roscore (free port) + pipeline.launch: rosbag play -> encoder_node -> /compressed_codes
                                           -> decoder_node -> /camera/image_decoded -> rosbag record
    report/: report.md, report.json, side-by-side PNGs (reference ISP | rawdiff fast)

Every frame played is accounted for, on any machine. Two things make sure of it:

- the nodes' queues hold the whole bag (``queue_size`` = the frames played, at most
  :data:`MAX_QUEUE`): a frame that arrives while a node is busy waits instead of pushing
  the previous one out. This is the guarantee: a node that is slower than planned (a
  fresh machine's first decodes, another job on the two cores) delays frames, it does not
  lose them;
- the bag is played at a rate derived from the codec's measured encode and decode time
  (``--rate auto``): one frame per twice their sum, so that on a machine like the one
  measured the queues stay empty and the latencies in the report are the nodes', not a
  backlog's.

Before, the demo played at a fixed rate 0.25 with queues of one frame: a decoder slower
than 400 ms a frame (650 ms on a fresh 2-core machine: the first decodes, both nodes and
rosbag on two cores) pushed frames out of its queue, and they were lost.

The demo ends with one line of accounting (played, encoded, decoded, lost) and fails when
a frame is lost. Everything started here is stopped before it returns. A bag of your own:
``python -m rawdiff.ros.tools.demo --bag camera.bag --topic /camera/image_raw --black-level ... ``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from rawdiff.paths import DEFAULT_MODEL_DIR as DEFAULT_MODEL
from rawdiff.raw.isp import render
from rawdiff.raw.unprocess import XYZ_TO_CAMERA, unprocess
from rawdiff.ros.conversions import frame_to_image, image_to_frame
from rawdiff.ros.tools.processes import Process, ros_environment, start_roscore, wait_for

VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
TOPIC = "/camera/image_raw"
#: The most frames a node's queue holds in the demo (a frame of a long bag of your own waits
#: in memory; the derived play rate keeps the queues short anyway).
MAX_QUEUE = 64
#: Frame period in the generated bag's time (10 Hz).
BAG_PERIOD_S = 0.1


def make_bag(path: str, frames: int = 16, every: int = 10, rate_hz: float = 10.0, seed: int = 7) -> int:
    """A bag of RAW frames unprocessed from the street video that opencv-doc ships: one
    camera (fixed colour matrix and gains) with fresh sensor noise per frame."""
    import cv2
    import rosbag
    import rospy

    if not os.path.isfile(VIDEO):
        raise FileNotFoundError("%s not found (Debian package opencv-doc); give --bag" % VIDEO)
    cap = cv2.VideoCapture(VIDEO)
    camera: Dict = {}
    written = 0
    start = rospy.Time(1700000000, 0)
    with rosbag.Bag(path, "w") as bag:
        index = 0
        while written < frames:
            ok, bgr = cap.read()
            if not ok:
                break
            index += 1
            if (index - 1) % every:
                continue
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            frame, meta = unprocess(rgb, seed=seed + written, **camera)
            if not camera:  # the first frame fixes the camera for the rest
                xyz = np.tensordot(np.asarray(meta["xyz_to_camera_weights"]), XYZ_TO_CAMERA, axes=1)
                camera = {"xyz_to_camera": xyz, "rgb_gain": meta["rgb_gain"],
                          "red_gain": meta["red_gain"], "blue_gain": meta["blue_gain"]}
            stamp = start + rospy.Duration.from_sec(written / rate_hz)
            msg = frame_to_image(frame, stamp=stamp, frame_id="camera")
            bag.write(TOPIC, msg, stamp)
            written += 1
    cap.release()
    if not written:
        raise ValueError("no frames could be read from %s" % VIDEO)
    return written


def measure_codec(msg, model: str, levels: Dict, repeats: int = 2) -> Dict[str, float]:
    """Encode and decode time of one frame (the bag's first), as the nodes run them: one
    thread, the encoder's backend ``auto``, the fast decoder; the best of ``repeats`` after
    a warm-up."""
    import torch

    from rawdiff.codec import Codec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frame = image_to_frame(msg, **levels)
        codec = Codec.load(model, device="cpu", backend="auto", threads=1)
        payload = codec.compress(frame)
        codec.decompress(payload)
        times = {"encode_s": float("inf"), "decode_s": float("inf")}
        for _ in range(repeats):
            start = time.perf_counter()
            payload = codec.compress(frame)
            middle = time.perf_counter()
            codec.decompress(payload)
            end = time.perf_counter()
            times["encode_s"] = min(times["encode_s"], middle - start)
            times["decode_s"] = min(times["decode_s"], end - middle)
        return times
    finally:
        torch.set_num_threads(threads)


def play_rate(times: Dict[str, float], period_s: float) -> float:
    """rosbag play's rate for one frame per twice the encode + decode time (the two nodes,
    rosbag and the recorder share the machine), at most real time."""
    return min(1.0, period_s / (2.0 * (times["encode_s"] + times["decode_s"])))


def _bag_frames(path: str, topic: str):
    import rosbag

    with rosbag.Bag(path) as bag:
        return [(m.header.stamp.to_nsec(), m) for _, m, _ in bag.read_messages(topics=[topic])]


def _diagnostics_listener(rospy):
    from diagnostic_msgs.msg import DiagnosticArray

    latest: Dict[str, Dict[str, str]] = {}

    def cb(msg):
        for status in msg.status:
            latest[status.name] = {kv.key: kv.value for kv in status.values}

    sub = rospy.Subscriber("/diagnostics", DiagnosticArray, cb, queue_size=10)
    return latest, sub


def _find(latest: Dict[str, Dict[str, str]], part: str) -> Dict[str, str]:
    for name, values in latest.items():
        if part in name:
            return values
    return {}


def run_pipeline(bag: str, record: str, out: str, model: str, launch_args: List[str], expected: int,
                 timeout: float = 600.0) -> Dict[str, Dict[str, str]]:
    """roscore + pipeline.launch playing ``bag``; returns the nodes' last diagnostics."""
    env = ros_environment(os.path.join(out, "ros"))
    # one torch thread per node: the encoder and the decoder share a small machine
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    core = start_roscore(env, os.path.join(out, "roscore.log"))
    launch = None
    try:
        os.environ.update({k: env[k] for k in ("ROS_MASTER_URI", "ROS_HOME", "ROS_LOG_DIR", "ROS_HOSTNAME")})
        import rospy

        rospy.init_node("rawdiff_demo", anonymous=True, disable_signals=True)
        latest, sub = _diagnostics_listener(rospy)
        args = ["roslaunch", "--screen", "rawdiff", "pipeline.launch", "bag:=" + bag, "record:=" + record,
                "model:=" + model] + launch_args
        launch = Process(args, os.path.join(out, "pipeline.log"), env)
        started = time.monotonic()

        def count(node: str, *kinds: str) -> int:
            values = _find(latest, node)
            return sum(int(values.get("frames " + k) or 0) for k in kinds)

        def done():
            # every played frame accounted for: decoded, or dropped/rejected/failed on the way
            launch.check_alive()
            lost = count("rawdiff_encoder", "dropped", "rejected", "failed")
            return count("rawdiff_decoder", "received", "dropped") >= expected - lost and \
                count("rawdiff_decoder", "published", "dropped", "rejected", "failed") + lost >= expected

        last = -1
        while True:
            try:
                wait_for(done, 5.0, 0.2, "decoded frames")
                break
            except AssertionError:
                published = count("rawdiff_decoder", "published")
                if published != last:
                    print("demo: %d/%d frames decoded (%.0f s)" % (published, expected,
                                                                  time.monotonic() - started), flush=True)
                    last = published
                if time.monotonic() - started > timeout:
                    raise RuntimeError("the pipeline decoded %d of %d frames in %.0f s; see %s"
                                       % (published, expected, timeout, launch.log_path)) from None
        time.sleep(1.5)  # one more diagnostics period with the final counters
        sub.unregister()
        return latest
    finally:
        if launch is not None:
            launch.stop()  # SIGINT: rosbag record closes its bag
        core.stop()


def write_report(out: str, played, recorded: str, diags: Dict[str, Dict[str, str]], levels: Dict,
                 wall_s: float, measured: Optional[Dict[str, float]] = None) -> Dict:
    import cv2
    import rosbag

    levels = dict(levels)
    rate = levels.pop("rate", None)

    with rosbag.Bag(recorded) as bag:
        codes = [m for _, m, _ in bag.read_messages(topics=["/compressed_codes"])]
        decoded = {m.header.stamp.to_nsec(): m for _, m, _ in bag.read_messages(topics=["/camera/image_decoded"])}
    sizes = [len(m.data) for m in codes]
    h, w = (codes[0].height, codes[0].width) if codes else (0, 0)
    enc, dec = _find(diags, "rawdiff_encoder"), _find(diags, "rawdiff_decoder")
    lost = {node: sum(int(values.get("frames " + k) or 0) for k in ("dropped", "rejected", "failed"))
            for node, values in (("encoder", enc), ("decoder", dec))}
    report = {
        "frames_played": len(played), "frames_encoded": len(codes), "frames_decoded": len(decoded),
        "frames_lost": {"encoder": lost["encoder"], "decoder": lost["decoder"],
                        "unaccounted": len(played) - len(decoded) - lost["encoder"] - lost["decoder"]},
        "play_rate": rate, "measured": measured,
        "frame_size": [int(w), int(h)], "bytes_per_frame_mean": float(np.mean(sizes)) if sizes else 0.0,
        "bpp_mean": float(np.mean(sizes) * 8.0 / (w * h)) if sizes else 0.0,
        "compression_vs_raw12": float(w * h * 1.5 / np.mean(sizes)) if sizes else 0.0,
        "encoder": enc, "decoder": dec, "wall_s": round(wall_s, 1),
        "model_id": codes[0].model_id if codes else "",
    }
    pictures = []
    for i, (stamp, msg) in enumerate(played[:4]):
        if stamp not in decoded:
            continue
        out_msg = decoded[stamp]
        rgb = np.frombuffer(out_msg.data, np.uint8).reshape(out_msg.height, out_msg.width, 3)
        reference = render(image_to_frame(msg, **levels))
        side = np.concatenate([reference, np.full((reference.shape[0], 8, 3), 255, np.uint8), rgb], axis=1)
        name = "side_by_side_%d.png" % i
        cv2.imwrite(os.path.join(out, name), side[:, :, ::-1])
        pictures.append(name)
    report["pictures"] = pictures
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    how = "" if not measured else " (one frame per twice the measured encode %.0f ms + decode %.0f ms)" % (
        1000 * measured["encode_s"], 1000 * measured["decode_s"])
    lines = ["# rawdiff demo", "", "Bag played at rosbag rate %.3g%s; model %s." % (rate, how, report["model_id"]), "",
             "| frames played / encoded / decoded | frame | bytes per frame | bits per RAW pixel | vs RAW12 |",
             "|---|---|---|---|---|",
             "| %d / %d / %d | %dx%d | %.0f | %.4f | %.0f:1 |" % (
                 report["frames_played"], report["frames_encoded"], report["frames_decoded"], w, h,
                 report["bytes_per_frame_mean"], report["bpp_mean"], report["compression_vs_raw12"]),
             "", "| node | latency mean (ms) | latency max (ms) | work mean (ms) | dropped | rejected | failed |",
             "|---|---|---|---|---|---|---|"]
    for name, values, verb in (("encoder", enc, "encode"), ("decoder", dec, "decode")):
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            name, values.get("%s latency mean (ms)" % verb, "?"), values.get("%s latency max (ms)" % verb, "?"),
            values.get("%s time mean (ms)" % verb, "?"), values.get("frames dropped", "?"),
            values.get("frames rejected", "?"), values.get("frames failed", "?")))
    lines += ["", "Left: reference ISP of the RAW frame; right: rawdiff (fast decoder).", ""]
    lines += ["![%s](%s)" % (p, p) for p in pictures]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="rawdiff-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="report folder")
    parser.add_argument("--model", default=None, help="model directory (default: models/default)")
    parser.add_argument("--bag", help="a bag of RAW frames to use instead of the generated one")
    parser.add_argument("--topic", default=TOPIC)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rate", default="auto",
                        help="rosbag play --rate, or auto: one frame per twice the measured encode + decode time")
    parser.add_argument("--cfa", default="")
    parser.add_argument("--black-level", type=float, default=256)
    parser.add_argument("--white-level", type=float, default=4095)
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    model = os.path.abspath(args.model or DEFAULT_MODEL)
    started = time.monotonic()
    try:
        bag = os.path.abspath(args.bag) if args.bag else os.path.join(out, "camera.bag")
        if not args.bag:
            n = make_bag(bag, frames=args.frames)
            print("demo: %d RAW frames from %s -> %s" % (n, VIDEO, bag), flush=True)
        played = _bag_frames(bag, args.topic)
        if not played:
            raise ValueError("bag %s has no messages on %s" % (bag, args.topic))
        record = os.path.join(out, "decoded.bag")
        if os.path.exists(record):
            os.remove(record)
        levels = {"black_level": args.black_level, "white_level": args.white_level, "cfa": args.cfa or None}
        measured = None
        if args.rate == "auto":
            measured = measure_codec(played[0][1], model, levels)
            period = _bag_period(played)
            rate = play_rate(measured, period)
            print("demo: encode %.0f ms, decode %.0f ms a frame here; playing at rate %.3g (one frame per %.2f s)"
                  % (1000 * measured["encode_s"], 1000 * measured["decode_s"], rate, period / rate), flush=True)
        else:
            rate = float(args.rate)
            if not rate > 0:
                raise ValueError("--rate must be positive or auto, got %r" % args.rate)
        queue = min(len(played), MAX_QUEUE)
        launch_args = ["black_level:=%g" % args.black_level, "white_level:=%g" % args.white_level,
                       "bag_args:=--rate %.4g" % rate, "queue_size:=%d" % queue]
        topic = args.topic.strip("/").split("/")
        if len(topic) == 2:
            launch_args += ["camera:=" + topic[0], "input:=" + topic[1]]
        if args.cfa:
            launch_args.append("cfa:=" + args.cfa)
        diags = run_pipeline(bag, record, out, model, launch_args, len(played))
        report = write_report(out, played, record, diags, dict(levels, rate=rate), time.monotonic() - started,
                              measured)
    except (ValueError, OSError, RuntimeError) as exc:
        print("demo: error: %s" % exc, file=sys.stderr)
        return 1
    print(summary_line(report, out))
    lost = report["frames_lost"]
    if report["frames_decoded"] != report["frames_played"]:
        print("demo: error: %d of %d frames lost (encoder %d, decoder %d, unaccounted %d)"
              % (report["frames_played"] - report["frames_decoded"], report["frames_played"], lost["encoder"],
                 lost["decoder"], lost["unaccounted"]), file=sys.stderr)
        return 1
    return 0


def _bag_period(played) -> float:
    """The mean time between the bag's frames (its header stamps), else 10 Hz."""
    stamps = [stamp for stamp, _ in played]
    if len(stamps) > 1 and stamps[-1] > stamps[0]:
        return (stamps[-1] - stamps[0]) / 1e9 / (len(stamps) - 1)
    return BAG_PERIOD_S


def summary_line(report: Dict, out: str) -> str:
    """What the demo prints last: accounting, size, rate, latencies, time; the README quotes it."""
    enc, dec = report["encoder"], report["decoder"]
    return ("demo: %d of %d frames decoded (encoded %d, lost %d), %dx%d, %.0f bytes/frame, %.4f bpp (%.0f:1 against "
            "RAW12); rate %.3g; encode latency %s ms, decode latency %s ms (decode time %s ms); %.0f s; report in "
            "%s/report.md" % (
                report["frames_decoded"], report["frames_played"], report["frames_encoded"],
                report["frames_played"] - report["frames_decoded"], report["frame_size"][0], report["frame_size"][1],
                report["bytes_per_frame_mean"], report["bpp_mean"], report["compression_vs_raw12"],
                report["play_rate"], enc.get("encode latency mean (ms)", "?"),
                dec.get("decode latency mean (ms)", "?"), dec.get("decode time mean (ms)", "?"), report["wall_s"], out))


if __name__ == "__main__":
    sys.exit(main())
