"""Configuration: merge order, overrides, and every validation error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from lakeloop.conf import ConfError, load_conf, parse_override

ROOT = Path(__file__).resolve().parents[1]


def write_conf(tmp_path: Path, base: str, **envs: str) -> Path:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "base.yaml").write_text(textwrap.dedent(base))
    for name, text in envs.items():
        (d / f"{name}.yaml").write_text(textwrap.dedent(text))
    return d


BASE = """
warehouse: /w
landing: /l
spark:
  master: local[2]
  executor.memory: 2g
  sql:
    shuffle.partitions: 8
sources:
  events: {format: jsonl, schema: events.yaml}
"""


def test_env_file_overrides_base_and_cli_overrides_env(tmp_path):
    d = write_conf(tmp_path, BASE, local="spark:\n  executor.memory: 4g\n  executor.cores: 3\n")
    conf = load_conf("local", ["spark.executor.memory=8g"], conf_dir=d)
    assert conf["spark.executor.memory"] == "8g"
    assert conf.origin("spark.executor.memory") == "--set"
    assert conf["spark.executor.cores"] == 3
    assert conf.origin("spark.executor.cores") == str(d / "local.yaml")
    assert conf["spark.sql.shuffle.partitions"] == 8
    assert conf.origin("warehouse") == str(d / "base.yaml")


def test_nested_and_dotted_keys_are_equivalent(tmp_path):
    d = write_conf(tmp_path, BASE, local="spark: {sql: {shuffle: {partitions: 3}}}\n")
    assert load_conf("local", conf_dir=d)["spark.sql.shuffle.partitions"] == 3


def test_dict_sections_merge_deeply(tmp_path):
    d = write_conf(tmp_path, BASE, local="sources:\n  users: {format: jsonl, schema: users.yaml}\n")
    conf = load_conf("local", ["sources.events.format=csv"], conf_dir=d)
    assert conf["sources"] == {"events": {"format": "csv", "schema": "events.yaml"},
                               "users": {"format": "jsonl", "schema": "users.yaml"}}


def test_unknown_key_names_key_and_file(tmp_path):
    d = write_conf(tmp_path, BASE, local="spark:\n  executor.memroy: 4g\n")
    with pytest.raises(ConfError) as err:
        load_conf("local", conf_dir=d)
    msg = str(err.value)
    assert "spark.executor.memroy" in msg and str(d / "local.yaml") in msg
    assert "spark.executor.memory" in msg  # the suggestion


def test_unknown_key_from_command_line(tmp_path):
    d = write_conf(tmp_path, BASE, local="")
    with pytest.raises(ConfError, match=r"--set: unknown key 'spark.exector.cores'"):
        load_conf("local", ["spark.exector.cores=2"], conf_dir=d)


def test_a_key_of_an_earlier_version_names_what_replaced_it(tmp_path):
    d = write_conf(tmp_path, BASE, local="stream:\n  items_table: silver.items\n")
    with pytest.raises(ConfError, match=r"local.yaml: stream.items_table: no longer a key; .*stream.realtime.group"):
        load_conf("local", conf_dir=d)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("spark.executor.cores=two", "expected an integer"),
        ("spark.executor.cores=true", "expected an integer"),
        ("spark.executor.memory=lots", "expected a memory size"),
        ("spark.dynamicAllocation.enabled=maybe", "expected true or false"),
        ("spark.scheduler.mode=ROUND_ROBIN", "expected one of FIFO, FAIR"),
        ("curate.max_quarantine_rate=high", "expected a number"),
        ("sources=[1, 2]", "expected a mapping"),
    ],
)
def test_wrong_type_names_key_and_origin(tmp_path, override, expected):
    d = write_conf(tmp_path, BASE, local="")
    key = override.split("=")[0]
    with pytest.raises(ConfError) as err:
        load_conf("local", [override], conf_dir=d)
    assert f"--set: {key}: {expected}" in str(err.value)


def test_wrong_type_in_file_names_the_file(tmp_path):
    d = write_conf(tmp_path, BASE, local="spark:\n  executor.instances: [1]\n")
    with pytest.raises(ConfError, match=rf"{d / 'local.yaml'}: spark.executor.instances: expected an integer"):
        load_conf("local", conf_dir=d)


def test_missing_required_value(tmp_path):
    d = write_conf(tmp_path, BASE.replace("warehouse: /w\n", ""), local="")
    with pytest.raises(ConfError, match=r"warehouse: a value is required"):
        load_conf("local", conf_dir=d)


def test_required_value_set_to_null(tmp_path):
    d = write_conf(tmp_path, BASE, local="landing: null\n")
    with pytest.raises(ConfError, match=rf"{d / 'local.yaml'}: landing: a value is required"):
        load_conf("local", conf_dir=d)


def test_env_variable_interpolation(tmp_path, monkeypatch):
    d = write_conf(tmp_path, BASE, local="warehouse: ${LL_TEST_WH}\nlanding: ${LL_TEST_UNSET:-/fallback}\n")
    monkeypatch.setenv("LL_TEST_WH", "/from/env")
    conf = load_conf("local", conf_dir=d)
    assert conf["warehouse"] == "/from/env" and conf["landing"] == "/fallback"
    monkeypatch.delenv("LL_TEST_WH")
    with pytest.raises(ConfError, match=r"warehouse: environment variable LL_TEST_WH is not set"):
        load_conf("local", conf_dir=d)


def test_bad_yaml_and_bad_top_level(tmp_path):
    d = write_conf(tmp_path, BASE, local="spark: [unclosed\n", standalone="- a list\n")
    with pytest.raises(ConfError, match="local.yaml: not valid YAML"):
        load_conf("local", conf_dir=d)
    with pytest.raises(ConfError, match="standalone.yaml: top level must be a mapping"):
        load_conf("standalone", conf_dir=d)


def test_unknown_env_lists_known_ones(tmp_path):
    d = write_conf(tmp_path, BASE, local="", yarn="")
    with pytest.raises(ConfError, match=r"unknown env 'prod'.*known: local, yarn"):
        load_conf("prod", conf_dir=d)


def test_dynamic_allocation_bounds(tmp_path):
    d = write_conf(tmp_path, BASE, local="")
    with pytest.raises(ConfError, match="minExecutors \\(9\\) > maxExecutors \\(2\\)"):
        load_conf("local", ["spark.dynamicAllocation.minExecutors=9", "spark.dynamicAllocation.maxExecutors=2"],
                  conf_dir=d)


def test_override_syntax():
    assert parse_override("spark.executor.memory=8g") == ("spark.executor.memory", "8g")
    assert parse_override("spark.executor.cores=4") == ("spark.executor.cores", 4)
    assert parse_override("gpu.enabled=true") == ("gpu.enabled", True)
    with pytest.raises(ConfError, match="expected key=value"):
        parse_override("spark.executor.memory")


@pytest.mark.parametrize("env", ["local", "standalone", "yarn"])
def test_shipped_envs_are_valid(env):
    conf = load_conf(env, conf_dir=ROOT / "conf")
    props = conf.spark_properties()
    assert props["spark.sql.session.timeZone"] == "UTC"
    assert props["spark.scheduler.mode"] == "FAIR"
    assert "spark.scheduler.pool" not in props  # a local property, set on the SparkContext


def test_spark_extra_passthrough_and_gpu_properties():
    conf = load_conf("local", ["spark.extra.spark.speculation=true", "gpu.enabled=true", "gpu.task_amount=0.5"],
                     conf_dir=ROOT / "conf")
    props = conf.spark_properties()
    assert props["spark.speculation"] == "true"
    assert props["spark.executor.resource.gpu.amount"] == "1"
    assert props["spark.task.resource.gpu.amount"] == "0.5"
    assert props["spark.executor.resource.gpu.discoveryScript"].endswith("lakeloop/resources/get_gpus_resources.sh")


def test_table_uri(conf, tmp_path):
    assert conf.table_uri("silver.events") == str(tmp_path / "warehouse" / "silver" / "events")
    with pytest.raises(ValueError, match="expected layer.name"):
        conf.table_uri("events")
