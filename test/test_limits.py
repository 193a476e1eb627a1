"""Size limits: a frame larger than ``max_pixels`` is refused from its header, before the
code grid is allocated, with one line naming the declared size and the limit."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from synthetic import declare_size, textured_photo

from rawdiff.cli import main
from rawdiff.codec import Codec, bitstream
from rawdiff.codec.limits import DEFAULT_MAX_PIXELS, FrameTooLargeError, check_max_pixels, check_tile
from rawdiff.raw.unprocess import unprocess


@pytest.fixture(scope="module")
def payload(fixture_model):
    frame, _ = unprocess(textured_photo(64, 96, 2), seed=2)
    return Codec.load(fixture_model, device="cpu").compress(frame)


class CountingPrior:
    """The codec's prior, counting decodes (the first allocation by the declared size)."""

    def __init__(self, prior):
        self.prior, self.decodes = prior, 0
        self.kind = prior.kind

    def decode(self, chunks, shapes, adapt=()):
        self.decodes += 1
        return self.prior.decode(chunks, shapes, adapt)


def test_the_default_limit_is_four_of_the_largest_automotive_sensor():
    assert DEFAULT_MAX_PIXELS == 4 * 3868 * 2176


@pytest.mark.parametrize("call", ["parse", "decompress", "decompress_raw"])
def test_a_frame_over_the_limit_is_refused_before_the_grid_is_decoded(fixture_model, payload, call):
    codec = Codec.load(fixture_model, device="cpu")
    codec.prior = counting = CountingPrior(codec.prior)
    attack = declare_size(payload, 32768, 32768)
    with pytest.raises(FrameTooLargeError) as info:
        getattr(codec, call)(attack)
    assert counting.decodes == 0
    message = str(info.value)
    assert "frame 32768x32768 (1073741824 pixels) exceeds the decoder's limit of %d pixels" % DEFAULT_MAX_PIXELS \
        in message
    assert isinstance(info.value, bitstream.BitstreamError) and isinstance(info.value, ValueError)
    getattr(codec, call)(payload)  # a frame within the limit decodes
    assert counting.decodes == 1


def test_the_limit_is_the_codec_s_and_can_be_lifted(fixture_model, payload):
    small = Codec.load(fixture_model, device="cpu", max_pixels=64 * 96 - 1)
    with pytest.raises(FrameTooLargeError, match=r"frame 96x64 \(6144 pixels\) exceeds the decoder's limit of 6143"):
        small.decompress(payload)
    exact = Codec.load(fixture_model, device="cpu", max_pixels=64 * 96)
    assert exact.decompress(payload).shape == (64, 96, 3)
    for off in (0, None):
        codec = Codec.load(fixture_model, device="cpu", max_pixels=off)
        assert codec.max_pixels is None
        codec.prior = counting = CountingPrior(codec.prior)
        try:  # past the limit check, the entropy decoder reads the grid from the payload
            codec.parse(declare_size(payload, 512, 512))
        except ValueError:
            pass
        assert counting.decodes == 1


@pytest.mark.parametrize("value, message", [(-1, ">= 0"), (1.5, "whole number"), ("lots", "number of pixels"),
                                            (True, "number of pixels")])
def test_bad_limits_are_named(value, message):
    with pytest.raises(ValueError, match=message):
        check_max_pixels(value, "~max_pixels")
    assert check_max_pixels("1000") == 1000 and check_tile("0") == 0 and check_tile(64) == 64


def test_cli_refuses_in_one_line_and_info_still_reads_the_header(tmp_path, payload, fixture_model):
    big = tmp_path / "big.rdc"
    big.write_bytes(declare_size(payload, 16384, 16384))
    out = tmp_path / "out.png"
    r = subprocess.run([sys.executable, "-m", "rawdiff.cli", "decompress", str(big), "-o", str(out), "--model",
                        fixture_model, "--max-pixels", "100000000"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == ["rawdiff decompress: error: frame 16384x16384 (268435456 pixels) exceeds the decoder's limit "
                     "of 100000000 pixels (max_pixels); raise the limit (--max-pixels, ~max_pixels) to decode it"]
    assert not out.exists()
    r = subprocess.run([sys.executable, "-m", "rawdiff.cli", "info", str(big)], capture_output=True, text=True)
    assert r.returncode == 0 and '"width": 16384' in r.stdout


def test_cli_max_pixels_and_tile_options(tmp_path, payload, fixture_model, capsys):
    rdc = tmp_path / "f.rdc"
    rdc.write_bytes(payload)
    for args in (["--max-pixels", "-5"], ["--tile", "3"], ["--tile", "x"]):
        with pytest.raises(SystemExit):
            main(["decompress", str(rdc), "-o", str(tmp_path / "o.png"), "--model", fixture_model] + args)
    capsys.readouterr()
    assert main(["decompress", str(rdc), "-o", str(tmp_path / "o.png"), "--model", fixture_model, "--max-pixels", "0",
                 "--tile", "8"]) == 0
    assert (tmp_path / "o.png").exists()


def test_a_decoded_frame_over_the_16_bit_white_level_is_refused(fixture_model, payload):
    header, body = bitstream.unpack(payload)
    hostile = bitstream.pack(dataclasses.replace(header, white_level=1e30, payload_length=None),
                             bitstream.stage_payloads(header, body))
    codec = Codec.load(fixture_model, device="cpu")
    with pytest.raises(ValueError, match="white_level 1e[+]30 is above the largest value of the 16-bit mosaic"):
        codec.decompress_raw(hostile)
    assert codec.decompress(hostile).dtype == np.uint8  # the sRGB path does not use the levels
