"""The encoder node's rate control without ROS: a simulated camera and codec on an injected
clock. The budget is held on a stream whose scenes change, estimates start from the
model's operating points or from one frame at the highest quality, a budget below quality
1 is reported, and the parameter checks name the range."""

import math
import re

import pytest

from rawdiff.ros.encoder_node import start_quality
from rawdiff.ros.rate_control import RateControl, check_target_kbps, seed_bpp

PIXELS = 1936 * 1112
FPS = 10.0
BPP = {1: 0.03, 2: 0.06, 3: 0.12, 4: 0.2, 5: 0.3}  # a 5-stage model's bits per pixel


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def frame_sizes(quality, complexity):
    """Bytes of a frame cut to each quality up to ``quality`` (a progressive stream)."""
    return {q: int(BPP[q] * complexity * PIXELS / 8) for q in range(1, quality + 1)}


def run(rc, clock, seconds, complexity=lambda i: 1.0, fps=FPS, start=0):
    """Code ``seconds`` of frames at ``fps``; [(time, quality, bits)]."""
    out = []
    for i in range(start, start + int(seconds * fps)):
        clock.t += 1.0 / fps
        rc.arrived()
        q = rc.choose(PIXELS)
        sizes = frame_sizes(q, complexity(i))
        rc.coded(q, sizes, PIXELS)
        out.append((clock.t, q, 8 * sizes[q]))
    return out


def kbps(frames):
    return sum(bits for _, _, bits in frames[1:]) / (frames[-1][0] - frames[0][0]) / 1000.0


def test_the_budget_is_held_on_a_stream_whose_scenes_change():
    clock = Clock()
    points = [{"quality": q, "bpp": b} for q, b in BPP.items()]
    rc = RateControl(5, points, clock=clock)
    target = 0.1 * PIXELS * FPS / 1000.0  # between qualities 2 and 3
    rc.set_target(target)
    scene = lambda i: 1.0 + 0.5 * math.sin(i / 15.0)  # noqa: E731 - complexity swings +-50 % over ~10 s
    frames = run(rc, clock, 30.0, scene)
    held = frames[int(3 * FPS):]
    assert abs(kbps(held) - target) < 0.03 * target
    for k in range(3, 25, 5):  # and over every 5 s window
        window = [f for f in frames if k <= f[0] - frames[0][0] < k + 5]
        assert abs(kbps(window) - target) < 0.1 * target, k
    assert {2, 3} <= {q for _, q, _ in held}
    assert abs(rc.achieved_kbps() - target) < 0.1 * target
    status = rc.status(PIXELS)
    assert status["budget"] == "met" and float(status["frame rate (Hz)"]) == pytest.approx(FPS)


def test_without_operating_points_one_frame_at_the_highest_quality_measures_all():
    clock = Clock()
    rc = RateControl(5, [], clock=clock)
    rc.set_target(0.07 * PIXELS * FPS / 1000.0)
    frames = run(rc, clock, 1.0)
    assert frames[0][1] == 5  # measures every quality at once
    assert rc.predicted_bits(1, PIXELS) == pytest.approx(BPP[1] * PIXELS, rel=1e-3)
    assert rc.predicted_bits(5, PIXELS) == pytest.approx(BPP[5] * PIXELS, rel=1e-3)
    later = run(rc, clock, 10.0, start=10)
    assert abs(kbps(later[20:]) - rc.target_kbps) < 0.05 * rc.target_kbps
    assert max(q for _, q, _ in later[20:]) <= 3


def test_a_simpler_scene_lowers_the_estimates_of_qualities_not_coded():
    clock = Clock()
    rc = RateControl(5, [{"quality": q, "bpp": b} for q, b in BPP.items()], ewma=1.0, clock=clock)
    clock.t += 0.1
    rc.coded(2, frame_sizes(2, 0.5), PIXELS)  # half the bits at quality 2
    assert rc.predicted_bits(1, PIXELS) == pytest.approx(0.5 * BPP[1] * PIXELS, rel=1e-3)
    assert rc.predicted_bits(5, PIXELS) == pytest.approx(0.5 * BPP[5] * PIXELS, rel=1e-3)


def test_a_pause_is_not_saved_up_for_a_burst():
    clock = Clock()
    rc = RateControl(5, [{"quality": q, "bpp": b} for q, b in BPP.items()], clock=clock)
    target = 0.1 * PIXELS * FPS / 1000.0
    rc.set_target(target)
    run(rc, clock, 5.0)
    clock.t += 5.0  # the stream stops for 5 s
    after = run(rc, clock, 1.0, start=50)
    assert max(q for _, q, _ in after) <= 3
    assert sum(bits for _, _, bits in after) < 1.3 * target * 1000.0


def test_below_quality_1_every_frame_is_quality_1_and_the_status_says_so():
    clock = Clock()
    rc = RateControl(5, [{"quality": q, "bpp": b} for q, b in BPP.items()], clock=clock)
    rc.set_target(0.01 * PIXELS * FPS / 1000.0)
    frames = run(rc, clock, 3.0)
    assert {q for _, q, _ in frames} == {1}
    assert re.match(r"not met: quality 1 needs 64[56]\.\d kbps at 10\.00 Hz$", rc.status(PIXELS)["budget"])


def test_a_new_target_empties_the_bucket_and_zero_is_off():
    clock = Clock()
    rc = RateControl(3, [{"quality": 1, "bpp": 0.1}, {"quality": 2, "bpp": 0.2}, {"quality": 3, "bpp": 0.4}],
                     clock=clock)
    with pytest.raises(ValueError, match="no bit budget"):
        rc.choose(PIXELS)
    rc.set_target(1.0)  # far below quality 1: the bucket fills with debt
    run(rc, clock, 2.0)
    assert float(rc.status(PIXELS)["bucket (kbit)"]) > 0
    rc.set_target(1e6)
    assert float(rc.status(PIXELS)["bucket (kbit)"]) == 0.0
    clock.t += 0.1
    rc.arrived()
    assert rc.choose(PIXELS) == 3


def test_operating_points_without_a_usable_bpp_are_left_out():
    assert seed_bpp([{"quality": 1, "bpp": 0.05}, {"quality": 9, "bpp": 0.1}, {"quality": 2, "bpp": float("nan")},
                     {"quality": 3}, "x", {"quality": 4, "bpp": -1}], 4) == {1: 0.05}
    assert seed_bpp([{"bpp": 0.05}, {"bpp": 0.1}], 4) == {1: 0.05, 2: 0.1}  # in order, when unnumbered


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "fast", None])
def test_target_kbps_must_be_a_number_at_least_0(value):
    with pytest.raises(ValueError, match=r"~target_kbps must be a number of kbit/s >= 0 \(0: off\)"):
        check_target_kbps(value)
    assert check_target_kbps(0) == 0.0 and check_target_kbps("250") == 250.0


def test_start_quality_names_the_model_s_range():
    assert start_quality(0, 5, 4) == 4 and start_quality(2, 5, 4) == 2 and start_quality(5, 5, 4) == 5
    for bad in (6, -1, 2.0, "2", True, None):
        with pytest.raises(ValueError, match=r"^~quality .* is not one of this model's operating points: 1\.\.5, "
                                             r"or 0 for its default \(4\)$"):
            start_quality(bad, 5, 4)


def test_the_reconfigure_ranges_are_the_model_s():
    pytest.importorskip("dynamic_reconfigure")
    from rawdiff.ros.reconfigure import narrowed, out_of_range

    try:
        from rawdiff.cfg import EncoderConfig
    except ImportError:
        pytest.skip("rawdiff.cfg.EncoderConfig not built (make setup)")
    from dynamic_reconfigure.encoding import encode_description, extract_params

    assert (EncoderConfig.min["quality"], EncoderConfig.max["quality"]) == (0, 255)
    kind = narrowed(EncoderConfig, {"quality": (0, 5)})
    assert (kind.min["quality"], kind.max["quality"]) == (0, 5)
    assert [p["max"] for p in extract_params(kind.config_description) if p["name"] == "quality"] == [5]
    assert EncoderConfig.max["quality"] == 255  # the generated module is left alone
    described = {p.name: p.value for p in encode_description(kind).max.ints}
    assert described["quality"] == 5
    assert out_of_range("quality", 9, 0, 5, "note") == "~quality 9 is outside 0..5 (note); set to 5"
    assert out_of_range("quality", 3, 0, 5) == ""
    assert out_of_range("target_kbps", -2.0, 0.0, 1e7) == "~target_kbps -2.0 is outside 0.0..10000000.0; set to 0.0"
    assert "NaN" in out_of_range("target_kbps", float("nan"), 0.0, 1e7)
