import pytest

from rawdiff import config


def test_overrides_parse_yaml_values_and_create_paths():
    cfg = {"model": {"params": {"lr": 1.0}}}
    out = config.apply_overrides(cfg, ["model.params.lr=1e-4", "model.params.mult=[1,2]", "data.new=true"])
    assert out["model"]["params"] == {"lr": 1e-4, "mult": [1, 2]}
    assert out["data"] == {"new": True}
    assert cfg["model"]["params"]["lr"] == 1.0  # the input is not modified


@pytest.mark.parametrize("bad", ["novalue", "=3"])
def test_bad_overrides_are_named(bad):
    with pytest.raises(ValueError, match="override"):
        config.apply_overrides({}, [bad])


def test_override_into_a_scalar_is_refused():
    with pytest.raises(ValueError, match="not a mapping"):
        config.apply_overrides({"a": 1}, ["a.b=2"])


def test_merge_is_deep():
    merged = config.merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4})
    assert merged == {"a": {"b": 1, "c": 3}, "d": 4}


def test_unknown_target_is_refused_not_imported():
    with pytest.raises(ValueError, match="unknown target 'os.system'"):
        config.instantiate({"target": "os.system", "params": {}})


def test_registered_targets_include_the_models():
    assert "vqgan" in config.registered()


def test_load_and_save_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    config.save_config({"model": {"target": "vqgan"}, "data": {"target": "rawrgb"}}, str(path))
    assert config.load_configs([str(path)], ["model.params.x=1"]) == {
        "model": {"target": "vqgan", "params": {"x": 1}}, "data": {"target": "rawrgb"}}
    assert config.load_configs([str(path)], sections=()) == {"model": {"target": "vqgan"}, "data": {"target": "rawrgb"}}


def test_an_experiment_without_a_model_or_data_section_is_a_value_error_naming_the_files(tmp_path):
    base, extra = tmp_path / "base.yaml", tmp_path / "extra.yaml"
    config.save_config({"model": {"target": "vqgan"}}, str(base))
    config.save_config({"lightning": {"trainer": {"max_steps": 1}}}, str(extra))
    with pytest.raises(ValueError, match=r"base.yaml \+ .*extra.yaml has no 'data' section"):
        config.load_configs([str(base), str(extra)])
    with pytest.raises(ValueError, match="section 'data' must be a mapping"):
        config.load_configs([str(base)], ["data=rawrgb"])
    config.save_config({"data": {"target": "rawrgb"}}, str(extra))
    assert set(config.load_configs([str(base), str(extra)])) == {"model", "data"}  # merged, it is whole


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        config.load_config(str(path))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        config.load_config(str(tmp_path / "missing.yaml"))
