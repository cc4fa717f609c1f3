"""Range checks of conf values and duplicate YAML keys: each is a ConfError (exit code 2) naming key and file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lakeloop.conf import ConfError, load_conf
from lakeloop.conf_checks import size_bytes
from lakeloop.errors import EXIT_USAGE, exit_code_for

from tests.test_conf import write_conf as conf_folder

ROOT = Path(__file__).resolve().parents[1]


def write_conf(tmp_path: Path, base: str, local: str = "") -> Path:
    """A conf folder with ``base.yaml`` and a ``local.yaml`` (empty by default)."""
    return conf_folder(tmp_path, base, local=local)


BASE = """
warehouse: /w
landing: /l
spark:
  master: local[2]
  executor.memory: 2g
sources:
  events: {format: jsonl, schema: events.yaml}
"""


def refused(overrides: list[str], match: str, tmp_path: Path) -> ConfError:
    with pytest.raises(ConfError, match=match) as info:
        load_conf("local", overrides, conf_dir=write_conf(tmp_path, BASE))
    assert exit_code_for(info.value) == EXIT_USAGE
    return info.value


@pytest.mark.parametrize(("override", "match"), [
    ("spark.driver.memory=0g", r"--set: spark.driver.memory: expected a memory size above zero.*'0g'"),
    ("spark.executor.memory=", r"spark.executor.memory: expected a memory size above zero.*None"),
    ("spark.executor.memory=0", r"spark.executor.memory: expected a memory size above zero"),
    ("curate.max_quarantine_rate=-0.1", r"curate.max_quarantine_rate: expected a number in \[0, 1\], got -0.1"),
    ("curate.max_quarantine_rate=1.5", r"curate.max_quarantine_rate: expected a number in \[0, 1\]"),
    ("serving.redis.port=99999999", r"serving.redis.port: expected a port in 1-65535, got 99999999"),
    ("serving.redis.port=0", r"serving.redis.port: expected a port in 1-65535"),
    ("spark.sql.shuffle.partitions=-5", r"spark.sql.shuffle.partitions: expected at least 1, got -5"),
    ("spark.sql.shuffle.partitions=0", r"spark.sql.shuffle.partitions: expected at least 1"),
    ("train.holdout_fraction=1.0", r"train.holdout_fraction: expected a number strictly between 0 and 1"),
    ("datagen.bad_fraction=2", r"datagen.bad_fraction: expected a number in \[0, 1\]"),
    ("infer.top_n=0", r"infer.top_n: expected at least 1"),
])
def test_value_out_of_range_is_refused(override, match, tmp_path):
    refused([override], match, tmp_path)


def test_edges_of_the_ranges_are_accepted(tmp_path):
    conf = load_conf("local", ["serving.redis.port=65535", "curate.max_quarantine_rate=0",
                               "spark.sql.shuffle.partitions=1", "spark.driver.memory=1k",
                               "serving.ttl_seconds=", "spark.executor.memoryOverhead="],
                     conf_dir=write_conf(tmp_path, BASE))
    assert conf["serving.redis.port"] == 65535 and conf["curate.max_quarantine_rate"] == 0.0
    assert conf["serving.ttl_seconds"] is None  # nullable keys may stay unset


def test_range_error_names_the_file_that_set_the_value(tmp_path):
    d = write_conf(tmp_path, BASE, local="serving:\n  redis:\n    port: 70000\n")
    with pytest.raises(ConfError, match=rf"{d / 'local.yaml'}: serving.redis.port: expected a port"):
        load_conf("local", conf_dir=d)


def test_project_conf_of_every_env_passes():
    for env in ("local", "standalone", "yarn"):
        load_conf(env, conf_dir=ROOT / "conf")


def test_duplicate_yaml_key_names_file_and_line(tmp_path):
    d = write_conf(tmp_path, BASE + "curate:\n  max_quarantine_rate: 0.1\n  max_quarantine_rate: 0.9\n")
    with pytest.raises(ConfError) as info:
        load_conf("local", conf_dir=d)
    text = str(info.value)
    assert str(d / "base.yaml") in text and "duplicate key 'max_quarantine_rate'" in text
    assert "line 11, column 3" in text and "first at line 10" in text


def test_duplicate_top_level_key_in_a_flow_mapping_is_refused(tmp_path):
    d = write_conf(tmp_path, BASE, local="spark: {executor.memory: 1g, executor.memory: 3g}\n")
    with pytest.raises(ConfError, match=r"local.yaml: not valid YAML: duplicate key 'executor.memory'"):
        load_conf("local", conf_dir=d)


def test_size_bytes():
    assert size_bytes("512m") == 512 << 20 and size_bytes("4g") == 4 << 30 and size_bytes("1.5k") == 1536
    assert size_bytes("10") == 10 and size_bytes("0g") == 0
    assert size_bytes("") is None and size_bytes(None) is None and size_bytes("lots") is None


def test_job_exits_2_on_a_range_error(tmp_path):
    """The job entry point maps the error to exit code 2 before Spark starts (no JVM heap error, exit 1)."""
    script = ("import sys; from jobs.ingest import main; "
              f"sys.exit(main(['--set', 'warehouse={tmp_path}/w', '--set', 'landing={tmp_path}/l', "
              "'--set', 'spark.driver.memory=0g', '--date', '2026-11-01']))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_USAGE, done.stderr[-2000:]
    assert "spark.driver.memory" in done.stderr + done.stdout
