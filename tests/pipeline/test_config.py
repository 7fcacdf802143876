import pytest

from tlfs.pipeline.config import load_settings
from tlfs.pipeline.config import CIFAR10_URL
from tlfs.pipeline.errors import PipelineError


def test_defaults():
    s = load_settings(environ={})
    assert s.cifar10_source == (CIFAR10_URL,) and s.device == "cpu"
    assert (s.runtime().batch_size, s.runtime().precision) == (64, "fp32")


def test_the_runtime_follows_the_device_unless_told():
    cuda = load_settings(environ={"TLFS_DEVICE": "cuda"}).runtime()
    assert (cuda.device, cuda.precision, cuda.batch_size, cuda.cuda_graph) == ("cuda", "fp16", 256, True)
    told = load_settings(environ={"TLFS_DEVICE": "cuda", "TLFS_PRECISION": "fp32", "TLFS_BATCH_SIZE": "512",
                                  "TLFS_CUDNN_CONV_ALGO_SEARCH": "heuristic"}).runtime()
    assert (told.precision, told.batch_size, told.cudnn_conv_algo_search) == ("fp32", 512, "HEURISTIC")


def test_environment_then_explicit_values_win(tmp_path):
    config = tmp_path / "tlfs.yaml"
    config.write_text("store: /from/yaml\nbatch_size: 32\n")
    env = {"TLFS_CONFIG": str(config), "TLFS_STORE": "s3://bucket/store", "TLFS_CIFAR10_SOURCE": "a.tar.gz, b.tar.gz"}
    s = load_settings(environ=env, batch_size=16)
    assert s.store == "s3://bucket/store" and s.batch_size == 16
    assert s.cifar10_source == ("a.tar.gz", "b.tar.gz")
    assert load_settings(environ={"TLFS_CONFIG": str(config)}).store == "/from/yaml"


def test_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match=r"batch_size \(TLFS_BATCH_SIZE\): expected a whole number, got 'many'"):
        load_settings(environ={"TLFS_BATCH_SIZE": "many"})
    with pytest.raises(PipelineError, match="device .TLFS_DEVICE.: expected one of cpu, cuda, got 'tpu'"):
        load_settings(environ={"TLFS_DEVICE": "tpu"})
    with pytest.raises(PipelineError, match="shard_size .TLFS_SHARD_SIZE.: expected a positive number, got 0"):
        load_settings(environ={"TLFS_SHARD_SIZE": "0"})
    bad = tmp_path / "c.yaml"
    bad.write_text("colour: blue\n")
    with pytest.raises(PipelineError, match="unknown setting"):
        load_settings(environ={"TLFS_CONFIG": str(bad)})


def test_only_cifar10_has_a_default_source():
    s = load_settings(environ={})
    assert s.sources_for("cifar10", None) == [CIFAR10_URL]
    with pytest.raises(PipelineError, match="needs --source"):
        s.sources_for("guitars", None)


def test_every_setting_says_its_default_and_variable_once_for_the_cli_and_the_params():
    from dataclasses import fields

    from tlfs.pipeline.config import ENV, Settings, setting_help

    assert set(ENV) == {f.name for f in fields(Settings)} and all(v.startswith("TLFS_") for v in ENV.values())
    assert setting_help("shard_size") == "images per shard file (per split) (default: $TLFS_SHARD_SIZE or 2500)"
    assert "64 on cpu, 256 on cuda" in setting_help("batch_size")


def test_the_operations_guide_shows_the_settings_as_config_declares_them():
    """The guide's table is config.settings_table(): a default changed in one place shows in both."""
    from pathlib import Path

    from tlfs.pipeline.config import settings_table

    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert settings_table() in guide


def test_a_yes_or_no_setting_refuses_anything_else():
    from dataclasses import fields

    from tlfs.pipeline.config import FinetuneConfig, parse_value

    (flag,) = [f for f in fields(FinetuneConfig) if f.name == "from_scratch"]
    assert parse_value(flag, "yes") is True and parse_value(flag, "off") is False
    with pytest.raises(ValueError, match="expected true or false, got 'maybe'"):
        parse_value(flag, "maybe")
