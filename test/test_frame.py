"""RawFrame, the R/G1/G2/B plane packing and the CFA helpers of rawdiff.raw.frame."""

import numpy as np
import pytest

from rawdiff.raw.frame import (
    CFA_PATTERNS,
    PLANE_ORDER,
    RawFrame,
    check_cfa,
    crop_cfa,
    flip_cfa,
    mosaic_to_planes,
    plane_offsets,
    planes_to_mosaic,
)

CODES = {"R": 1, "G1": 2, "G2": 3, "B": 4}


def tile_labels(cfa):
    """2x2 plane names of a pattern: the green on the red row is G1, the other G2."""
    rows = [list(cfa[:2]), list(cfa[2:])]
    labels = []
    for row in rows:
        out = []
        for colour in row:
            if colour == "G":
                colour = "G1" if "R" in row else "G2"
            out.append(colour)
        labels.append(out)
    return labels


def labelled_mosaic(cfa, height=6, width=8):
    """Colour letters per pixel, and a numeric mosaic: plane code * 1000 + pixel index."""
    labels = tile_labels(cfa)
    names = np.empty((height, width), dtype=object)
    values = np.zeros((height, width), dtype=np.uint16)
    for y in range(height):
        for x in range(width):
            name = labels[y % 2][x % 2]
            names[y, x] = name
            values[y, x] = CODES[name] * 1000 + y * width + x
    return names, values


def cfa_of(names):
    """The pattern read from the top-left 2x2 tile of a labelled mosaic."""
    return "".join(str(names[r, c])[0] for r in (0, 1) for c in (0, 1))


# --- planes ---------------------------------------------------------------------------


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_planes_in_order_r_g1_g2_b_for_every_phase(cfa):
    names, values = labelled_mosaic(cfa)
    planes = mosaic_to_planes(values, cfa)
    assert planes.shape == (4, 3, 4)
    for plane, name in zip(planes, PLANE_ORDER):
        np.testing.assert_array_equal(plane // 1000, CODES[name])
    # spatial order is kept: plane[k][i, j] is pixel (2i + r, 2j + c)
    for name, (r, c) in plane_offsets(cfa).items():
        k = PLANE_ORDER.index(name)
        np.testing.assert_array_equal(planes[k] % 1000, (values % 1000)[r::2, c::2])
        assert {names[r + 2 * i, c + 2 * j] for i in range(3) for j in range(4)} == {name}


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_to_planes_of_a_frame(cfa):
    _, values = labelled_mosaic(cfa)
    codes = values // 1000 * 1000  # each colour one known value
    frame = RawFrame(codes, cfa=cfa, black_level=0, white_level=8000)
    planes = frame.to_planes()
    assert planes.dtype == np.float32 and planes.shape == (4, 3, 4)
    for k, name in enumerate(PLANE_ORDER):
        np.testing.assert_allclose(planes[k], CODES[name] * 1000 / 8000)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_planes_to_mosaic_inverts(cfa):
    _, values = labelled_mosaic(cfa)
    planes = mosaic_to_planes(values, cfa)
    back = planes_to_mosaic(planes, cfa)
    assert back.dtype == values.dtype
    np.testing.assert_array_equal(back, values)
    rng = np.random.default_rng(1)
    random_planes = rng.random((4, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(mosaic_to_planes(planes_to_mosaic(random_planes, cfa), cfa), random_planes)


def test_plane_offsets_table():
    assert plane_offsets("RGGB") == {"R": (0, 0), "G1": (0, 1), "G2": (1, 0), "B": (1, 1)}
    assert plane_offsets("BGGR") == {"B": (0, 0), "G2": (0, 1), "G1": (1, 0), "R": (1, 1)}
    assert plane_offsets("GRBG") == {"G1": (0, 0), "R": (0, 1), "B": (1, 0), "G2": (1, 1)}
    assert plane_offsets("GBRG") == {"G2": (0, 0), "B": (0, 1), "R": (1, 0), "G1": (1, 1)}
    assert plane_offsets("grbg")["R"] == (0, 1)


# --- flip / crop ----------------------------------------------------------------------


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("horizontal", [False, True])
@pytest.mark.parametrize("vertical", [False, True])
def test_flip_cfa_matches_flipping(cfa, horizontal, vertical):
    names, values = labelled_mosaic(cfa)
    if horizontal:
        names, values = names[:, ::-1], values[:, ::-1]
    if vertical:
        names, values = names[::-1], values[::-1]
    flipped = flip_cfa(cfa, horizontal=horizontal, vertical=vertical)
    assert flipped == cfa_of(names)
    # a mirror keeps each green on its row, so the planes of the flipped mosaic are the same
    for plane, name in zip(mosaic_to_planes(values, flipped), PLANE_ORDER):
        np.testing.assert_array_equal(plane // 1000, CODES[name])


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_crop_cfa_matches_cropping(cfa):
    names, _ = labelled_mosaic(cfa)
    for top in range(4):
        for left in range(4):
            assert crop_cfa(cfa, top, left) == cfa_of(names[top:, left:]), (top, left)


def test_cfa_helpers_are_consistent():
    assert flip_cfa("RGGB", horizontal=True) == "GRBG"
    assert flip_cfa("RGGB", vertical=True) == "GBRG"
    assert flip_cfa("RGGB", True, True) == "BGGR"
    assert flip_cfa("gbrg") == "GBRG"
    assert crop_cfa("RGGB", 1, 1) == "BGGR"
    assert check_cfa("bggr") == "BGGR"
    for cfa in CFA_PATTERNS:
        assert flip_cfa(flip_cfa(cfa, True, True), True, True) == cfa
        assert crop_cfa(cfa, 2, 4) == cfa


# --- normalize ------------------------------------------------------------------------


def test_normalize_scalar_black_level():
    mosaic = np.array([[0, 64, 576], [1088, 2000, 1024]], dtype=np.uint16)
    frame = RawFrame(mosaic, black_level=64, white_level=1088)
    out = frame.normalize()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0, 0.5], [1, 1, 960 / 1024]])


def test_normalize_per_channel_black_level():
    black = (10, 20, 30, 40)  # tile positions in row-major order, not colours
    mosaic = np.array([[110, 120, 110, 120, 110],
                       [130, 140, 130, 140, 130],
                       [5, 1010, 10, 2000, 510]], dtype=np.uint16)
    frame = RawFrame(mosaic, cfa="GRBG", black_level=black, white_level=1010)
    assert frame.black_level == (10.0, 20.0, 30.0, 40.0)
    np.testing.assert_array_equal(frame.black_level_map(), [[10, 20, 10, 20, 10],
                                                            [30, 40, 30, 40, 30],
                                                            [10, 20, 10, 20, 10]])
    expected = np.array([[100 / 1000, 100 / 990, 100 / 1000, 100 / 990, 100 / 1000],
                         [100 / 980, 100 / 970, 100 / 980, 100 / 970, 100 / 980],
                         [0, 1, 0, 1, 0.5]])
    np.testing.assert_allclose(frame.normalize(), expected, rtol=1e-6)


def test_to_planes_per_channel_black_follows_tile_position():
    # GRBG: R sits at (0, 1), so its black level is the second value
    mosaic = np.tile(np.array([[100, 200], [300, 400]], dtype=np.uint16), (2, 2))
    frame = RawFrame(mosaic, cfa="GRBG", black_level=(100, 200, 300, 400), white_level=1100)
    planes = frame.to_planes()
    np.testing.assert_allclose(planes, 0.0)
    frame = RawFrame(mosaic + 100, cfa="GRBG", black_level=(0, 100, 200, 300), white_level=1100)
    planes = frame.to_planes()
    # R (0,1): (300-100)/1000; G1 (0,0): 200/1100; G2 (1,1): (500-300)/800; B (1,0): (400-200)/900
    np.testing.assert_allclose(planes[:, 0, 0], [0.2, 200 / 1100, 0.25, 200 / 900], rtol=1e-6)


# --- construction and errors ----------------------------------------------------------


def test_construction_normalises_fields():
    frame = RawFrame(np.arange(16, dtype=np.int32).reshape(4, 4), cfa="bggr", black_level=[[1, 2], [3, 4]],
                     white_level=1023, wb_gains=(2, 1, 1.5), color_matrix=np.eye(3).tolist(),
                     timestamp=1.5, frame_id="cam")
    assert frame.mosaic.dtype == np.uint16
    assert frame.cfa == "BGGR"
    assert frame.black_level == (1.0, 2.0, 3.0, 4.0)
    assert frame.white_level == 1023.0 and isinstance(frame.white_level, float)
    assert frame.wb_gains.shape == (3,) and frame.color_matrix.shape == (3, 3)
    assert frame.shape == (4, 4) and frame.height == 4 and frame.width == 4
    assert RawFrame(np.zeros((2, 2), np.uint16), black_level=np.float32(5)).black_level == 5.0
    other = frame.copy(cfa="RGGB")
    assert other.cfa == "RGGB" and other.mosaic is frame.mosaic
    with pytest.raises(ValueError, match="white_level"):
        frame.copy(white_level=2)


@pytest.mark.parametrize("kwargs,message", [
    (dict(black_level=64, white_level=64), r"white_level 64 <= black_level 64"),
    (dict(black_level=100, white_level=50), r"white_level 50 <= black_level 100"),
    (dict(black_level=(0, 0, 0, 2000), white_level=1023), r"white_level 1023 <= black_level 2000"),
    (dict(black_level=(1, 2, 3)), r"black_level must be a scalar or 4 values, got 3"),
    (dict(black_level=float("nan")), r"black_level must be finite"),
    (dict(white_level=float("inf")), r"white_level must be finite"),
    (dict(cfa="RGBG"), r"cfa 'RGBG' is not one of RGGB, BGGR, GRBG, GBRG"),
    (dict(cfa="RGGBX"), r"cfa 'RGGBX'"),
    (dict(cfa=""), r"cfa ''"),
    (dict(wb_gains=[1, 2]), r"wb_gains must be 3 positive finite values"),
    (dict(wb_gains=[1, 0, 2]), r"wb_gains must be 3 positive finite values"),
    (dict(wb_gains=[1, -1, 2]), r"wb_gains must be 3 positive finite values"),
    (dict(wb_gains=[1, float("nan"), 2]), r"wb_gains must be 3 positive finite values"),
    (dict(color_matrix=np.eye(4)), r"color_matrix must be a finite 3x3 matrix, got shape \(4, 4\)"),
    (dict(color_matrix=np.ones(9)), r"color_matrix must be a finite 3x3 matrix, got shape \(9,\)"),
    (dict(color_matrix=np.full((3, 3), np.inf)), r"color_matrix must be a finite 3x3 matrix"),
    (dict(color_matrix=[[1, 2, 3], [2, 4, 6], [0, 0, 1]]), r"color_matrix .* is singular"),
    (dict(color_matrix=np.zeros((3, 3))), r"color_matrix .* is singular"),
    (dict(wb_gains=[1, float("inf"), 2]), r"wb_gains must be 3 positive finite values"),
])
def test_rawframe_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RawFrame(np.zeros((4, 4), np.uint16), **kwargs)


@pytest.mark.parametrize("mosaic,message", [
    (np.zeros((0, 4), np.uint16), r"mosaic is empty"),
    (np.zeros((4, 0), np.uint16), r"mosaic is empty"),
    (np.zeros(4, np.uint16), r"mosaic must be 2-D"),
    (np.zeros((2, 2, 3), np.uint16), r"mosaic must be 2-D"),
    (np.zeros((2, 2), np.float32), r"unsigned 16-bit values, got float32"),
    (np.zeros((2, 2), bool), r"unsigned 16-bit values, got bool"),
    (np.array([[-1, 0], [0, 0]]), r"unsigned 16-bit values"),
    (np.array([[65536, 0], [0, 0]]), r"unsigned 16-bit values"),
])
def test_rawframe_bad_mosaics(mosaic, message):
    with pytest.raises(ValueError, match=message):
        RawFrame(mosaic)


@pytest.mark.parametrize("shape", [(5, 4), (4, 5), (3, 3), (1, 2)])
def test_to_planes_needs_even_sizes(shape):
    frame = RawFrame(np.zeros(shape, np.uint16))
    frame.normalize()  # odd sizes are fine until the planes are needed
    with pytest.raises(ValueError, match=r"height and width must be even .* got \(%d, %d\)" % shape):
        frame.to_planes()


def test_plane_function_errors():
    with pytest.raises(ValueError, match="mosaic must be 2-D"):
        mosaic_to_planes(np.zeros(4), "RGGB")
    with pytest.raises(ValueError, match="mosaic must be 2-D"):
        mosaic_to_planes(np.zeros((4, 6, 2)), "RGGB")
    with pytest.raises(ValueError, match="must be even"):
        mosaic_to_planes(np.zeros((4, 5)), "RGGB")
    with pytest.raises(ValueError, match="cfa 'XYZW'"):
        mosaic_to_planes(np.zeros((4, 4)), "XYZW")
    with pytest.raises(ValueError, match=r"planes must be 4 x H/2 x W/2, got shape \(3, 2, 2\)"):
        planes_to_mosaic(np.zeros((3, 2, 2)), "RGGB")
    with pytest.raises(ValueError, match=r"got shape \(4, 2\)"):
        planes_to_mosaic(np.zeros((4, 2)), "RGGB")
    for bad in ("RGBG", "rggbb", None, 3):
        with pytest.raises(ValueError, match="cfa"):
            check_cfa(bad)
        with pytest.raises(ValueError, match="cfa"):
            flip_cfa(bad, True)
        with pytest.raises(ValueError, match="cfa"):
            crop_cfa(bad, 1, 0)
