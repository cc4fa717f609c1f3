"""The library modules the Spark 3.5 jobs import work on Spark 3.5: conf, session, tables, training data and
the backend interface.  Runs in the Spark 3.5 runtime only: ``.venv-spark35/bin/python -m pytest -m bigdl``."""

from __future__ import annotations

import pytest

pyspark = pytest.importorskip("pyspark")
if not pyspark.__version__.startswith("3.5."):
    pytest.skip("Spark 3.5 runtime test: run with .venv-spark35/bin/python -m pytest -m bigdl",
                allow_module_level=True)

from lakeloop import tables  # noqa: E402
from lakeloop.session import RunContext, build_session  # noqa: E402
from lakeloop.train.base import Backend, get_backend  # noqa: E402
from lakeloop.train.dataset import load_model_data  # noqa: E402
from lakeloop_apps.recommender.model import FEATURES  # noqa: E402

from tests.test_train import RUN_DATE, training_frame, write_gold  # noqa: E402

pytestmark = pytest.mark.bigdl


def test_conf_and_session_on_spark35(spark, conf):
    ctx = RunContext("train", conf, RUN_DATE)
    session = build_session(ctx)
    assert session.version.startswith("3.5.")
    assert session.conf.get("spark.sql.session.timeZone") == "UTC"


def test_tables_write_read_and_time_travel_on_spark35(spark, conf):
    uri = conf.table_uri("gold.t")
    first = spark.createDataFrame([(1, "a", "2026-11-01"), (2, "b", "2026-11-02")], "id long, v string, dt string")
    tables.write(first, uri, mode="overwrite", partition_by=["dt"])
    tables.write(spark.createDataFrame([(3, "c", "2026-11-02")], "id long, v string, dt string"), uri,
                 mode="append", partition_by=["dt"])
    assert tables.version(uri) == 1
    assert sorted(r.id for r in tables.read(spark, uri, where="dt = '2026-11-02'").collect()) == [2, 3]
    assert sorted(r.id for r in tables.read(spark, uri, version=0).collect()) == [1, 2]


def test_training_data_and_backend_interface_on_spark35(spark, conf):
    write_gold(spark, conf, training_frame(spark, RUN_DATE))
    data = load_model_data(spark, conf, RUN_DATE)
    assert data.features == FEATURES
    assert data.train.count() > 0 and data.valid.count() > 0
    assert data.input_versions == {"gold.training_set": 0}
    backend = get_backend("bigdl")
    assert isinstance(backend, Backend) and backend.name == "bigdl"
    assert backend.device_params("cpu") == {}
    with pytest.raises(ValueError, match="CPU only"):
        backend.device_params("cuda:0")
