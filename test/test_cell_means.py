"""Mean layers (rawdiff.codec.cell_means): nested levels, the exact prediction, the coder,
and the codec end to end on a tiny model trained with them."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rawdiff.codec import bitstream
from rawdiff.codec import cell_means as cm
from rawdiff.codec.entropy import quantize_probabilities
from rawdiff.models.embedder import cell_mean_functional

STAGES = [(2, 16), (2, 16), (1, 32)]
LAYERS = [(1, 2), (2, 3), (3, 5)]


def random_layers(seed=0, shape=(13, 17)):
    """MeanLayers with random codeword tables, and a frame's (gamma, codes) that fit them."""
    rng = np.random.default_rng(seed)
    tables = [rng.normal(0, 0.05, (k, 4)) for _, k in STAGES]
    layers = cm.MeanLayers(LAYERS, STAGES, tables, np.full(4, 0.2))
    h, w = shape
    codes = [rng.integers(0, k, (-(-h // sc), -(-w // sc))) for sc, k in STAGES]
    means = np.clip(layers_means(layers, codes, shape) + rng.normal(0, 0.03, (4, h, w)), 0, 1)
    return layers, cm.gamma_channels(means), codes


def layers_means(layers, codes, shape):
    """The cell means of the codes' latent computed independently: torch's bilinear
    interpolation of each stage's contribution (the decoder's expand_to)."""
    h, w = shape
    total = np.zeros((4, h, w)) + layers.offset[:, None, None]
    for (scale, _), table, grid in zip(layers.stages, layers.tables, codes):
        add = torch.from_numpy(table[grid].transpose(2, 0, 1))[None]
        if scale > 1:
            add = F.interpolate(add, scale_factor=float(scale), mode="bilinear", align_corners=False)
        total += add[0, :, :h, :w].numpy()
    return total


def test_levels_nest_so_a_layer_sends_only_new_bits():
    rng = np.random.default_rng(1)
    gamma = np.stack([rng.uniform(0, 1, (20, 20)), rng.uniform(-1, 1, (20, 20)), rng.uniform(-1, 1, (20, 20)),
                      np.zeros((20, 20))])
    gamma[0, 0, 0], gamma[1, 0, 0] = 1.0, 1.0  # the ends of the ranges
    for e in range(2, 8):
        fine, coarse = cm.levels(gamma, e), cm.levels(gamma, e - 1)
        assert np.array_equal(fine >> 1, coarse)
        lo, hi = cm.intervals(fine, e)
        inside = (gamma[:3] >= lo) & (gamma[:3] < hi)
        assert inside.sum() == inside.size - 2  # all but the two values at the top of their range
        assert np.all(cm.levels(gamma, e) <= cm.level_range(e)[1][:, None, None])


def test_prediction_is_the_decoders_latent_means():
    layers, gamma, codes = random_layers()
    for n in (1, 2, 3):
        expected = cm.gamma_channels(layers_means(layers, codes[:n], gamma.shape[1:]))
        assert np.allclose(layers.prediction(codes[:n], gamma.shape[1:]), expected, atol=1e-12)
    for j, p in enumerate(layers.predictions(codes, gamma.shape[1:], 3)):  # the same sums, once
        assert np.array_equal(p, layers.prediction(codes[: LAYERS[j][0]], gamma.shape[1:]))


def test_layers_round_trip_and_a_lower_quality_is_a_prefix():
    layers, gamma, codes = random_layers()
    cm.fit(layers, [(gamma, codes)])
    full = layers.encode(gamma, codes, 3)
    assert len(full) == 3
    for q in (1, 2):
        assert layers.encode(gamma, codes, q) == full[: cm.layers_at(LAYERS, q)]
    for count in (1, 2, 3):
        level, exponent = layers.decode_levels(full[:count], codes, gamma.shape[1:])
        assert exponent == LAYERS[count - 1][1]
        assert np.array_equal(level, cm.levels(gamma, exponent))
        lo, hi = layers.decode(full[:count], codes, gamma.shape[1:])
        interval = cm.intervals(level, exponent)
        assert np.all(lo > interval[0]) and np.all(hi < interval[1]) and np.all(lo < hi)
    assert layers.decode([], codes, gamma.shape[1:]) is None


def test_fitted_tables_code_below_the_raw_bits_and_survive_a_state_round_trip(tmp_path):
    layers, gamma, codes = random_layers()
    bits = cm.fit(layers, [(gamma, codes), random_layers(seed=1)[1:]])
    raw = [np.log2(layers.symbols_of(j)) for j in range(len(LAYERS))]
    assert all(0 < b < r for b, r in zip(bits, raw))
    path = str(tmp_path / "means.safetensors")
    layers.save(path)
    again = cm.MeanLayers.load(path)
    assert again.layers == layers.layers and again.stages == layers.stages
    assert again.encode(gamma, codes, 3) == layers.encode(gamma, codes, 3)


def test_corrupted_or_short_layers_fail_naming_the_layer():
    layers, gamma, codes = random_layers()
    cm.fit(layers, [(gamma, codes)])
    chunks = layers.encode(gamma, codes, 3)
    shape = gamma.shape[1:]
    with pytest.raises(ValueError, match="mean layer 1: 3 bytes is not a whole number of 32-bit words"):
        layers.decode([b"abc"], codes, shape)
    uniform = cm.MeanLayers(LAYERS, STAGES, layers.tables, layers.offset,
                            [quantize_probabilities(np.ones((layers.contexts_of(j), layers.symbols_of(j))))
                             for j in range(3)])
    first = uniform.encode(gamma, codes, 1)
    with pytest.raises(ValueError, match="mean layer 2: 4 bytes are too few for 663 values"):
        uniform.decode([first[0], b"\x00" * 4], codes, shape)
    with pytest.raises(ValueError, match="mean layer 3 follows stage 3: only 2 stages coded"):
        layers.decode(chunks, codes[:2], shape)
    with pytest.raises(ValueError, match="4 mean layers coded, the model has 3"):
        layers.decode(chunks + [b""], codes, shape)
    with pytest.raises(ValueError, match="larger than"):
        layers.decode(chunks[:1], codes, (1 << 13, 1 << 13))
    rng = np.random.default_rng(3)
    for _ in range(20):  # random words: an error or levels in range, never a crash
        junk = rng.integers(0, 256, len(chunks[1]), dtype=np.uint8).tobytes()
        try:
            level, _ = layers.decode_levels([chunks[0], junk], codes, shape)
        except ValueError as exc:
            assert "mean layer 2" in str(exc)
        else:
            assert level.shape == (3,) + shape


def test_layers_are_checked():
    tables = [np.zeros((k, 4)) for _, k in STAGES]
    for bad, match in [([(4, 2)], "after stage 4: the model has stages 1..3"),
                       ([(1, 3), (2, 3)], "increasing exponents"),
                       ([(2, 2), (1, 3)], "follow the stages in order"),
                       ([(1, 11)], "exponent 11 outside 1..10"),
                       ([(1,)], r"is \(after_stage, exponent\)")]:
        with pytest.raises(ValueError, match=match):
            cm.MeanLayers(bad, STAGES, tables, np.zeros(4))
    with pytest.raises(ValueError, match="must be 16 x 4 finite values"):
        cm.MeanLayers(LAYERS, STAGES, [np.zeros((15, 4))] + tables[1:], np.zeros(4))
    with pytest.raises(ValueError, match="no frequency tables"):
        cm.MeanLayers(LAYERS, STAGES, tables, np.zeros(4)).encode(np.zeros((4, 4, 4)), [np.zeros((2, 2), int)] * 3, 1)


# ------------------------------------------------------------------ the codec end to end


@pytest.fixture(scope="module")
def means_codec(tiny_means_model):
    from rawdiff.codec import Codec

    return Codec.load(tiny_means_model, backend="torch")


def test_the_codec_sends_mean_layers_and_cuts_streams_exactly(means_codec, corpus_frames):
    codec = means_codec
    assert codec.means is not None and codec.means.layers == LAYERS
    for _, frame in corpus_frames[:2]:
        streams = {q: codec.compress(frame, quality=q) for q in (1, 2, 3)}
        for q, data in streams.items():
            header = bitstream.read_header(data)
            assert header.version == 9 and len(header.adapt) == q  # mean layers and adaptive coding
            assert [(a, e) for a, e, _ in header.means] == LAYERS[: cm.layers_at(LAYERS, q)]
            assert bitstream.truncate(streams[3], q) == data
            _, codes = codec.parse(data)
            assert codes.means is not None
        img = codec.decompress(streams[3])
        assert img.shape == (frame.height, frame.width, 3) and img.dtype == np.uint8


def test_the_decoder_keeps_the_sent_means(means_codec, corpus_frames):
    """The latent the fast path decodes has the cell means the layers sent (within the
    bounds), where the codes alone are further off."""
    codec = means_codec
    emb = codec.embedder
    _, frame = corpus_frames[0]
    header, codes = codec.parse(codec.compress(frame, quality=3))
    latent = codec.tiled_latent(codes, "fast", 1, 0, header.code_shape)
    a = cm.mean_tables(cell_mean_functional(emb.analysis_weight.double()).numpy(), emb.analysis_bias.double().numpy(),
                       [np.eye(emb.quantize.embed_dim)])
    means = np.einsum("dc,dhw->chw", a[0][0], latent[0, : emb.quantize.embed_dim].double().numpy())
    gamma = cm.gamma_channels(means + a[1][:, None, None])[:3]
    lo, hi = codes.means
    assert np.all(gamma > lo - 1e-6) and np.all(gamma < hi + 1e-6)
    with torch.no_grad():
        coded = emb.lookup_codes([torch.from_numpy(np.asarray(c))[None] for c in codes], header.code_shape)
    plain = np.einsum("dc,dhw->chw", a[0][0], coded[0, : emb.quantize.embed_dim].double().numpy())
    plain = cm.gamma_channels(plain + a[1][:, None, None])[:3]
    assert np.mean((plain < lo - 1e-6) | (plain > hi + 1e-6)) > 0.05  # the codes alone: often outside


def test_a_corrupted_mean_layer_is_a_bitstream_error(means_codec, corpus_frames):
    codec = means_codec
    _, frame = corpus_frames[0]
    data = codec.compress(frame, quality=3)
    header, payload = bitstream.unpack(data)
    chunks, means = bitstream.split_payload(header, payload)
    header = dataclasses.replace(header, payload_length=None)
    bad = bitstream.pack(header, chunks, [means[0], means[1][:4]] + means[2:])
    with pytest.raises(bitstream.BitstreamError, match="mean layer 2"):
        codec.parse(bad)
    # a stream whose layers are not the model's: one layer of another exponent after stage 1
    other = bitstream.pack(dataclasses.replace(header, means=((1, 3, 0),), payload_length=None), chunks, means[:1])
    with pytest.raises(bitstream.BitstreamError, match=r"mean layers \[\(1, 3\)\] do not match model"):
        codec.parse(other)


def test_the_decoder_weights_ship_in_half_precision(tiny_means_model):
    from safetensors.numpy import load_file

    state = load_file(tiny_means_model + "/embedder.safetensors")
    assert state["decoder.conv_in.weight"].dtype == np.float16
    assert state["analysis_weight"].dtype == np.float32
    assert all(v.dtype == np.float32 for k, v in state.items() if k.startswith("quantize."))


def test_rawdiff_eval_reports_the_mean_layers(tiny_means_model, tmp_path):
    import json

    from test_eval import _write_frames

    from rawdiff.cli import main

    _write_frames(str(tmp_path / "raw"), n=2)
    out = tmp_path / "out"
    assert main(["eval", "--model", tiny_means_model, str(tmp_path / "raw"), "--out", str(out), "--codecs",
                 "webp", "--steps", "1", "--no-progress", "--no-butteraugli"]) == 0
    m = json.loads((out / "results.json").read_text())["models"][0]
    assert m["truncation"]["checked"] == 4 and m["truncation"]["identical"] == 4
    rows = m["mean_layer_stats"]
    assert [(r["layer"], r["after_stage"], r["exponent"], r["new_bits"]) for r in rows] == [
        (1, 1, 2, None), (2, 2, 3, 1), (3, 3, 5, 2)]
    assert all(r["bytes_per_frame"] >= 4 and r["bpp"] > 0 for r in rows)
    assert "Mean layers" in (out / "report.md").read_text()


def test_the_vehicle_graph_and_a_diffusion_decoder_keep_the_mean_layers(tiny_means_model, tiny_corpus, corpus_frames,
                                                                       tmp_path):
    """encoder.onnx gives the torch encoder's streams byte for byte (the layers are coded
    from its codes and the planes, without torch); a diffusion decoder trained on the model
    decodes them with the drawn latent moved to the sent means."""
    import shutil

    from rawdiff.cli import main
    from rawdiff.codec import Codec
    from rawdiff.train import train

    model = str(tmp_path / "model")
    shutil.copytree(tiny_means_model, model)
    assert main(["export-onnx", "--model", model]) == 0
    torch_codec, onnx_codec = Codec.load(model, backend="torch"), Codec.load(model, backend="onnx")
    _, frame = corpus_frames[1]
    data = torch_codec.compress(frame, quality=3)
    assert onnx_codec.compress(frame, quality=3) == data

    ldm = str(tmp_path / "ldm")
    config = str(__import__("pathlib").Path(__file__).parents[1] / "config" / "models" / "ldm_tiny.yaml")
    train([config], ["model.params.embedder=%s" % tiny_means_model, "data.params.root=%s" % tiny_corpus],
          logdir=str(tmp_path / "runs"), export=ldm, log_every_n_steps=1)
    codec = Codec.load(ldm)
    assert codec.means is not None
    data = codec.compress(frame, quality=3)
    header, codes = codec.parse(data)
    drawn = codec.tiled_latent(codes, "diffusion", 2, 0, header.code_shape, realism=1.0)
    plain = codec.tiled_latent(list(codes), "diffusion", 2, 0, header.code_shape, realism=1.0)  # no means
    assert not torch.equal(drawn, plain)
    img = codec.decompress(data, mode="diffusion", steps=2)
    assert img.shape == (frame.height, frame.width, 3)
    assert np.array_equal(img, codec.decompress(data, mode="diffusion", steps=2))


def test_mutated_streams_with_mean_layers_end_in_an_image_or_a_value_error(tiny_means_model):
    """A short run of benchmarks/fuzz.py on a model with mean layers (their entries and
    payloads mutated with the rest)."""
    import importlib.util
    import os

    from rawdiff.codec import Codec

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "fuzz.py")
    spec = importlib.util.spec_from_file_location("rawdiff_fuzz_means", path)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    codec = Codec.load(tiny_means_model, device="cpu", backend="torch", max_pixels=256 * 256)
    summary = fuzz.run(codec, 600, seed=11)
    assert summary["unexpected"] == [], summary["unexpected"][:3]
    outcomes = summary["outcomes"]
    assert outcomes["stage_table"].get("BitstreamError", 0) > 0
    assert "decoded" in outcomes["payload_rewrite"] or outcomes["payload_rewrite"].get("BitstreamError", 0) > 0
