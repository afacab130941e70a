from pathlib import Path

import pytest

from ft.config import Config, ConfigError, load_config, parse_overrides

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lora:\n  r: 8\ntrain:\n  learning_rate: 3.0e-4\n")
    cfg = load_config(p, ["--lora.r", "64", "--train.learning_rate=1e-4", "--lora.target_modules", "q_proj,v_proj"])
    assert isinstance(cfg, Config)
    assert cfg.lora.r == 64 and cfg.train.learning_rate == 1e-4
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.quantization.mode == "4bit" and cfg.quantization.double_quant


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"lora\.rr.*Did you mean 'lora.r'"):
        load_config(None, ["--lora.rr", "4"])
    with pytest.raises(ConfigError, match=r"Unknown config key 'train.learnig_rate'.*train.learning_rate"):
        load_config(None, ["--train.learnig_rate", "1e-4"])
    p = tmp_path / "c.yaml"
    p.write_text("lora:\n  alfa: 1\n")
    with pytest.raises(ConfigError, match=r"'lora.alfa'.*Did you mean 'lora.alpha'"):
        load_config(p)
    p.write_text("trian:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"'trian'.*Did you mean 'train'"):
        load_config(p)


@pytest.mark.parametrize(
    "key,value,pattern",
    [
        ("lora.r", "0", r"'lora.r' has a bad value 0"),
        ("train.learning_rate", "-1", r"'train.learning_rate' has a bad value -1"),
        ("train.per_device_batch_size", "0", r"'train.per_device_batch_size' has a bad value 0"),
        ("data.source", "/nonexistent/train.jsonl", r"'data.source' has a bad value '/nonexistent/train.jsonl'"),
        ("model.name_or_path", "./no/such/model", r"'model.name_or_path'.*does not exist"),
        ("quantization.mode", "3bit", r"'quantization.mode' has a bad value '3bit'"),
        ("lora.r", "abc", r"'lora.r' must be an integer, got 'abc'"),
    ],
)
def test_bad_values_name_key_and_value(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [f"--{key}", value])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--lora.r"])


def test_shipped_recipes_parse():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.lora.r > 0, path
