"""read_dng: DNG files written here with pidng (an independent writer), read back with rawpy.

``write_dng`` is also used by test_isp's LibRaw comparison.
"""

from __future__ import annotations

import types
from fractions import Fraction

import numpy as np
import pytest

from rawdiff.raw import read_raw
from rawdiff.raw.dng import _color_matrix, read_dng
from rawdiff.raw.frame import CFA_PATTERNS
from rawdiff.raw.isp import camera_to_srgb_matrix

pidng = pytest.importorskip("pidng")
from pidng.core import RAW2DNG  # noqa: E402
from pidng.defs import CalibrationIlluminant, PhotometricInterpretation  # noqa: E402
from pidng.dng import DNGTags, Tag  # noqa: E402

#: A DNG ColorMatrix1 (XYZ -> camera, D65): Brooks et al.'s fourth camera.
XYZ_TO_CAMERA = np.array([[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]])
#: As-shot white balance gains (R, G, B); AsShotNeutral is their inverse.
AS_SHOT_GAINS = (2.0, 1.0, 1.6)
#: Black levels of the 2x2 tile positions, row-major (BlackLevelRepeatDim 2x2).
TILE_BLACK = (256, 258, 254, 257)
_CFA_CODES = {"R": 0, "G": 1, "B": 2}


def _rational(value: float, denominator: int = 10000):
    frac = Fraction(value).limit_denominator(denominator)
    return [frac.numerator, frac.denominator]


def write_dng(
    path,
    mosaic: np.ndarray,
    cfa: str = "RGGB",
    black_level=TILE_BLACK,
    white_level: int = 4095,
    as_shot_gains=AS_SHOT_GAINS,
    xyz_to_camera=XYZ_TO_CAMERA,
    cfa_dim=(2, 2),
    cfa_codes=None,
):
    """Write a 16-bit uncompressed CFA DNG with pidng; None leaves a tag out. Returns the path."""
    mosaic = np.ascontiguousarray(mosaic, dtype=np.uint16)
    h, w = mosaic.shape
    tags = DNGTags()
    tags.set(Tag.ImageWidth, w)
    tags.set(Tag.ImageLength, h)
    tags.set(Tag.TileWidth, w)
    tags.set(Tag.TileLength, h)
    tags.set(Tag.Orientation, 1)
    tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    tags.set(Tag.SamplesPerPixel, 1)
    tags.set(Tag.BitsPerSample, 16)
    tags.set(Tag.CFARepeatPatternDim, list(cfa_dim))
    tags.set(Tag.CFAPattern, cfa_codes if cfa_codes is not None else [_CFA_CODES[c] for c in cfa])
    black = np.asarray(black_level).reshape(-1).astype(int).tolist()
    if len(black) == 4:
        tags.set(Tag.BlackLevelRepeatDim, [2, 2])
    tags.set(Tag.BlackLevel, black)
    tags.set(Tag.WhiteLevel, int(white_level))
    if xyz_to_camera is not None:
        tags.set(Tag.ColorMatrix1, [_rational(v) for v in np.ravel(xyz_to_camera)])
        tags.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    if as_shot_gains is not None:
        tags.set(Tag.AsShotNeutral, [_rational(1.0 / g) for g in as_shot_gains])
    tags.set(Tag.Make, "rawdiff")
    tags.set(Tag.Model, "synthetic")
    tags.set(Tag.UniqueCameraModel, "rawdiff synthetic")
    writer = RAW2DNG()
    writer.options(tags, path=str(path.parent), compress=False)
    writer.convert(mosaic, filename=path.stem)
    assert path.suffix == ".dng" and path.is_file()
    return path


def _random_mosaic(seed=0, shape=(24, 32)):
    return np.random.default_rng(seed).integers(0, 4096, size=shape, dtype=np.uint16)


def _tag_matrix(xyz_to_camera):
    """The matrix as the DNG stores it (rationals with denominator <= 10000)."""
    return np.array([float(Fraction(*_rational(v))) for v in np.ravel(xyz_to_camera)]).reshape(3, 3)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_read_dng_every_cfa_phase(tmp_path, cfa):
    mosaic = _random_mosaic()
    path = write_dng(tmp_path / ("f_%s.dng" % cfa), mosaic, cfa=cfa)
    frame = read_dng(path)
    assert frame.cfa == cfa
    np.testing.assert_array_equal(frame.mosaic, mosaic)
    assert frame.mosaic.dtype == np.uint16
    assert frame.black_level == tuple(float(b) for b in TILE_BLACK)  # tile positions, not colours
    assert frame.white_level == 4095
    np.testing.assert_allclose(frame.wb_gains, AS_SHOT_GAINS, rtol=1e-6)
    assert frame.frame_id == path.name
    assert frame.extra["flip"] == 0


def test_color_matrix_matches_the_dng_colormatrix(tmp_path):
    path = write_dng(tmp_path / "m.dng", _random_mosaic())
    frame = read_dng(path)
    # LibRaw's color_matrix (rgb_cam) and our formula for the tag's matrix agree.
    expected = camera_to_srgb_matrix(_tag_matrix(XYZ_TO_CAMERA))
    np.testing.assert_allclose(frame.color_matrix, expected, atol=1e-5)
    np.testing.assert_allclose(frame.color_matrix.sum(axis=1), 1.0, atol=1e-6)
    assert frame.extra["color_matrix_source"] == "libraw_color_matrix"


def test_gains_normalised_to_green(tmp_path):
    path = write_dng(tmp_path / "g.dng", _random_mosaic(), as_shot_gains=(4.0, 2.0, 2.5))
    np.testing.assert_allclose(read_dng(path).wb_gains, [2.0, 1.0, 1.25], rtol=1e-6)


def test_missing_metadata_gives_none_and_scalar_black(tmp_path):
    path = write_dng(tmp_path / "bare.dng", _random_mosaic(), black_level=64, as_shot_gains=None, xyz_to_camera=None)
    frame = read_dng(path)
    assert frame.wb_gains is None
    assert frame.color_matrix is None
    assert frame.black_level == 64.0
    assert frame.extra["color_matrix_source"] == "none"


def test_read_raw_dispatches_dng(tmp_path):
    mosaic = _random_mosaic(seed=3)
    path = write_dng(tmp_path / "io.dng", mosaic, cfa="GBRG")
    frame = read_raw(path)
    assert frame.cfa == "GBRG"
    np.testing.assert_array_equal(frame.mosaic, mosaic)


def test_rgb_xyz_matrix_fallback():
    """Other RAW formats: LibRaw leaves color_matrix at 0 and fills rgb_xyz_matrix (cam_xyz)."""
    cam_xyz = np.zeros((4, 3))
    cam_xyz[:3] = XYZ_TO_CAMERA
    raw = types.SimpleNamespace(color_matrix=np.zeros((3, 4)), rgb_xyz_matrix=cam_xyz, num_colors=3)
    ccm, source = _color_matrix(raw, "RGBG")
    assert source == "rgb_xyz_matrix"
    np.testing.assert_allclose(ccm, camera_to_srgb_matrix(XYZ_TO_CAMERA))
    raw = types.SimpleNamespace(color_matrix=np.zeros((3, 4)), rgb_xyz_matrix=np.zeros((4, 3)), num_colors=3)
    assert _color_matrix(raw, "RGBG") == (None, "none")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.dng: no such file"):
        read_dng(tmp_path / "nope.dng")
    with pytest.raises(ValueError, match="not a file"):
        read_dng(tmp_path)


def test_not_a_raw_file_names_the_path(tmp_path):
    path = tmp_path / "text.dng"
    path.write_text("this is not a DNG")
    with pytest.raises(ValueError, match=r"text\.dng: not a RAW file rawpy can read"):
        read_dng(path)


def test_xtrans_is_refused(tmp_path):
    xtrans = [1, 1, 0, 1, 1, 2] + [1, 1, 2, 1, 1, 0] + [2, 0, 1, 0, 2, 1]
    xtrans += [1, 1, 2, 1, 1, 0] + [1, 1, 0, 1, 1, 2] + [0, 2, 1, 2, 0, 1]
    path = write_dng(tmp_path / "xt.dng", _random_mosaic(shape=(24, 36)), cfa_dim=(6, 6), cfa_codes=xtrans)
    with pytest.raises(ValueError, match=r"xt\.dng: CFA pattern is 6x6 \(Fujifilm X-Trans\)"):
        read_dng(path)


def test_a_truncated_dng_is_one_line_with_what_libraw_printed(tmp_path):
    """LibRaw prints "NAME: Unexpected end of file" on the process's stderr itself; the
    command's error is still one line, and names it."""
    import subprocess
    import sys

    path = write_dng(tmp_path / "cut.dng", _random_mosaic(shape=(256, 320)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    run = subprocess.run([sys.executable, "-m", "rawdiff.cli", "isp", str(path), "-o", str(tmp_path / "o.png")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("rawdiff isp: error: %s: " % path) and "LibRaw: " in run.stderr
    assert not (tmp_path / "o.png").exists()


def test_a_file_reads_when_standard_error_cannot_be_redirected(tmp_path, monkeypatch):
    """The capture of LibRaw's messages is best effort: a full temporary folder (or no
    descriptor 2) must not make a good file unreadable."""
    import tempfile

    mosaic = _random_mosaic()
    path = write_dng(tmp_path / "good.dng", mosaic)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    np.testing.assert_array_equal(read_dng(path).mosaic, mosaic)
