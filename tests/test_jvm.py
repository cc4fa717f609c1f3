"""lakeloop.jvm: which connector jars load into which Spark, and what session and spark-submit add for them."""

from __future__ import annotations

import pytest
from lakeloop import jvm
from lakeloop.conf import ConfError, load_conf
from lakeloop.session import jvm_properties

from tests.conftest import ROOT


def _connector(root, name, lines, jars=("a-1.0.jar",), version="4.2.0"):
    folder = root / name
    folder.mkdir(parents=True)
    for jar in jars:
        (folder / jar).write_bytes(b"PK")
    (folder / "versions.properties").write_text(f"# test\nspark.lines={lines}\nspark.version={version}\n")


@pytest.fixture
def jars(tmp_path, monkeypatch):
    monkeypatch.setenv(jvm.JARS_ENV, str(tmp_path))
    _connector(tmp_path, "delta", "4.2", ("delta-spark_2.13-4.4.0.jar", "delta-storage-4.4.0.jar"))
    _connector(tmp_path, "kafka", "4.2 4.3", ("spark-sql-kafka-0-10_2.13-4.2.0.jar",))
    return tmp_path


def test_connectors_load_only_into_their_spark_lines(jars):
    assert jvm.connector("delta", "4.2.1").usable
    delta = jvm.connector("delta", "4.3.0")
    assert not delta.usable and "load into Spark 4.2, this is Spark 4.3.0" in delta.reason
    assert jvm.connector("kafka", "4.3.0").usable
    assert [p.name for p in jvm.session_jars("4.3.0")] == ["spark-sql-kafka-0-10_2.13-4.2.0.jar"]
    assert len(jvm.session_jars("4.2.0")) == 3
    assert len(jvm.session_jars("4.2.0", delta=False)) == 1
    assert jvm.session_jars("3.5.9") == []


def test_missing_jars_change_nothing_and_name_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setenv(jvm.JARS_ENV, str(tmp_path / "none"))
    assert jvm.session_jars() == [] and jvm.kafka_broker_jars() == []
    assert "./setup.sh jvm" in jvm.connector("delta").reason
    jars, props = jvm.spark_settings("auto")
    assert jars == [] and props == {"spark.lakeloop.delta.engine": "auto"}
    with pytest.raises(ValueError, match="./setup.sh jvm"):
        jvm.spark_settings("delta-spark")


def test_spark_settings_add_delta_extension_and_catalog_beside_others(jars):
    _, props = jvm.spark_settings("auto", "4.2.0", {"spark.sql.extensions": "com.example.Ext"})
    assert props["spark.sql.extensions"] == f"com.example.Ext,{jvm.DELTA_EXTENSION}"
    assert props["spark.sql.catalog.spark_catalog"] == jvm.DELTA_CATALOG
    jars_bridge, props = jvm.spark_settings("bridge", "4.2.0")
    assert "spark.sql.extensions" not in props and all("delta" not in p.name for p in jars_bridge)
    _, props = jvm.spark_settings("auto", "4.3.0")
    assert "spark.sql.extensions" not in props


def test_session_properties_ship_jars_and_refuse_a_missing_delta_spark(jars, tmp_path):
    conf = load_conf("local", ["spark.extra={spark.jars: /opt/x.jar}"], conf_dir=ROOT / "conf")
    props = jvm_properties(conf, "4.2.0")
    shipped = props["spark.jars"].split(",")
    assert shipped[0] == "/opt/x.jar" and len(shipped) == 4
    conf = load_conf("local", ["delta.engine=delta-spark"], conf_dir=ROOT / "conf")
    with pytest.raises(ConfError, match="delta.engine: delta-spark, but the delta connector jars .* Spark 4.3.0"):
        jvm_properties(conf, "4.3.0")


def test_spark_submit_ships_connector_jars(jars):
    from lakeloop.submit import build_command

    cmd = build_command("curate", "local", [], ["--date", "2026-11-01"], check_files=False)
    shipped = cmd.argv[cmd.argv.index("--jars") + 1].split(",")
    assert [p.rsplit("/", 1)[1] for p in shipped] == [p.name for p in jvm.session_jars()]
    assert "--conf" in cmd.argv and "spark.lakeloop.delta.engine=auto" in cmd.argv
