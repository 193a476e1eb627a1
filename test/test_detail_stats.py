"""The frame's detail statistics the encoder sends for the texture stage's level."""

from __future__ import annotations

import numpy as np
import pytest

from rawdiff.codec.detail_stats import FEATURES, LOW, STEPS, dequantize, detail_statistics, frame_detail, quantize


def _planes(seed: int, amplitude: float, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0.05, 0.2, w, dtype=np.float32)[None, None, :].repeat(4, 0).repeat(h, 1)
    return np.clip(base + amplitude * rng.standard_normal((4, h, w)).astype(np.float32), 0, 1)


def test_the_statistics_grow_with_the_detail_and_move_by_the_log_of_a_gain():
    quiet, busy = detail_statistics(_planes(0, 0.002)), detail_statistics(_planes(0, 0.02))
    assert quiet.shape == (FEATURES,) and (busy > quiet + 1).all()
    # energies in the square-root domain: planes 4 times as bright have 4 times the energy
    p = _planes(1, 0.01) * np.float32(0.25)
    np.testing.assert_allclose(detail_statistics(4 * p), detail_statistics(p) + np.log(4.0), atol=1e-4)


def test_flat_planes_sit_on_the_floor_and_quantise_to_the_lowest_code():
    flat = np.full((4, 16, 16), 0.3, dtype=np.float32)
    np.testing.assert_allclose(detail_statistics(flat), np.log(1e-8))
    assert frame_detail(flat) == (0, 0, 0)


def test_quantisation_is_within_half_a_step_inside_its_range_and_clips_outside():
    x = np.array([-15.2, -7.31, -0.5])
    assert np.abs(dequantize(quantize(x)) - x).max() <= 0.5 / STEPS + 1e-12
    assert quantize([-40.0, 3.0]) == (0, 255)
    assert dequantize([0, 255]).tolist() == [LOW, LOW + 255 / STEPS]


def test_small_planes_are_one_block_and_bad_shapes_are_refused():
    assert np.isfinite(detail_statistics(_planes(2, 0.01, 5, 7))).all()
    for bad in (np.zeros((3, 16, 16)), np.zeros((16, 16)), np.zeros((4, 2, 16))):
        with pytest.raises(ValueError, match="detail statistics need"):
            detail_statistics(bad)
