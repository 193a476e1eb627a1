"""A short run of ``benchmarks/fuzz.py`` in CI: mutated bitstreams through the decoder end
in an image or a ValueError, never another exception, and no declared size over the limit
gets through."""

import importlib.util
import os

import pytest

from rawdiff.codec import Codec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("rawdiff_fuzz", os.path.join(ROOT, "benchmarks", "fuzz.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_three_thousand_mutations_end_in_an_image_or_a_value_error(fuzz, fixture_model):
    codec = Codec.load(fixture_model, device="cpu", backend="torch", max_pixels=256 * 256)
    summary = fuzz.run(codec, 3000, seed=5)
    assert summary["unexpected"] == [], summary["unexpected"][:3]
    assert summary["over_limit_decoded"] == 0
    outcomes = summary["outcomes"]
    assert set(outcomes) == set(fuzz.MUTATIONS)
    assert sum(sum(v.values()) for v in outcomes.values()) == 3000  # every case has one outcome
    assert outcomes["declared_size"].get("FrameTooLargeError", 0) > 0
    assert outcomes["bit_flip"].get("BitstreamError", 0) > 0
    assert "decoded" in outcomes["header_rewrite"]  # CRC-valid rewrites of harmless fields decode
    # the stage table: mismatched stages, lengths that do not add up, stage payloads cut in
    # the wrong places that the entropy decoder refuses
    assert outcomes["stage_table"].get("BitstreamError", 0) > 0 and outcomes["stage_table"].get("ValueError", 0) > 0
    assert "unexpected exceptions: 0" in fuzz.report(summary)


def test_mutations_are_what_they_say(fuzz, fixture_model):
    import numpy as np

    from rawdiff.codec import bitstream

    codec = Codec.load(fixture_model, device="cpu", backend="torch")
    seeds = fuzz.seed_bitstreams(codec, 4)
    assert [bitstream.read_header(d).quality for d in seeds] == [3, 2, 1, 3]  # every quality
    data = seeds[0]
    rng = np.random.default_rng(0)
    assert len(fuzz.mutate(rng, data, "truncate")) < len(data)
    assert len(fuzz.mutate(rng, data, "extend")) > len(data)
    flipped = fuzz.mutate(rng, data, "bit_flip")
    assert len(flipped) == len(data) and flipped != data
    for kind in ("header_rewrite", "payload_rewrite", "declared_size", "stage_table"):  # the CRC is made right again
        mutated = fuzz.mutate(rng, data, kind)
        try:
            bitstream.unpack(mutated)
        except bitstream.BitstreamError as exc:
            assert "CRC" not in str(exc)
    header = bitstream.read_header(fuzz.mutate(np.random.default_rng(3), data, "declared_size"))
    assert header.code_height == -(-header.height // 8) and header.code_width == -(-header.width // 8)
    # payload rewrites leave the stage table alone; stage table rewrites touch only it
    table, start = bitstream.layout(data)["table"], bitstream.layout(data)["payload"]
    changed_table = 0
    for i in range(40):
        payload = fuzz.mutate(np.random.default_rng(i), data, "payload_rewrite")
        assert payload[:start] == data[:start]
        stage = fuzz.mutate(np.random.default_rng(i), data, "stage_table")
        assert stage[:table] == data[:table] and stage[start:-4] == data[start:-4]
        changed_table += stage[table:start] != data[table:start]
    assert changed_table >= 30
    with pytest.raises(ValueError, match="unknown mutation"):
        fuzz.mutate(rng, data, "nonsense")
