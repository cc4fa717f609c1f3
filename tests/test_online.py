"""Online scoring end to end on the recommender: its feature sets materialized into the serving store, then
``POST /v1/score/ranker`` through the real service answers, for the same (user, item) pairs and as-of time,
exactly the scores bulk inference wrote to gold.predictions (train/serve skew zero); a moved @champion alias
is picked up without a restart and without a failed request; bad requests and empty inputs are refused."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from lakeloop import infer, online
from lakeloop.errors import DataQualityError
from lakeloop.materialize import entity_frame, feature_store, materialize, online_sets, set_frame, set_rows
from lakeloop.serving import open_store
from lakeloop.serving.client import LookupClient
from lakeloop.serving.server import ServeSettings, serve_in_thread

from tests.test_infer import RUN_DATE, read_predictions, recommender_lake
from tests.test_serve_api import post

pytestmark = pytest.mark.slow

SETS = ["item_stats", "user_activity", "user_item_activity", "user_category_affinity"]


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """The recommender's lake with a champion, its run date scored by ``infer`` and materialized."""
    conf, _, args, champion = recommender_lake(tmp_path_factory.mktemp("online"),
                                               ("serve.online.models=[ranker]", "serve.online.refresh_s=0.2"))
    scored = infer.infer_for_date(spark, conf, RUN_DATE, "run1")
    done = materialize(spark, conf, RUN_DATE, "m1")
    return conf, champion, scored, done, args


@pytest.fixture(scope="module")
def service(lake):
    conf = lake[0]
    running = serve_in_thread(open_store(conf), ServeSettings.from_conf(conf, port=0))
    yield running
    running.stop()


def test_the_online_models_sets_are_materialized_per_entity(spark, lake):
    from lakeloop.featuresets import load_specs
    from lakeloop.featuresets.build import Inputs, plan_bounds
    from lakeloop.lake import Lake

    conf, _, _, done, _ = lake
    assert online_sets(conf) == SETS == list(done)
    sets, lake_ = load_specs(conf).sets, Lake.from_conf(conf)
    assert [sets[n].materialize for n in SETS] == [True, False, False, False]  # gold read, or computed
    inputs = Inputs(spark, lake_, plan_bounds([sets[n] for n in SETS], [], sets, RUN_DATE))
    for name in SETS:
        rows = set_rows(spark, lake_, sets[name], inputs, RUN_DATE)
        store = feature_store(conf, name)
        assert store.current_version() == done[name]["version"] == f"{RUN_DATE.isoformat()}-m1"
        # every entity, and what an entity without a row gets
        assert done[name]["keys"] == rows.count() + 1 == store.load_info(done[name]["version"]).count > 1
        assert store.get(online.ABSENT_KEY) is not None
        # a sample of entities: the stored object is the row's features
        for row in entity_frame(rows, sets[name]).limit(20).collect():
            assert store.get(row["key"]) == {k: v for k, v in row["features"].asDict().items() if v is not None}
    inputs.close()


def test_online_scores_equal_the_batch_predictions(spark, lake, service):
    conf, champion, scored, _, _ = lake
    sample = read_predictions(spark, conf).sample(n=60, random_state=3)
    rows = [{"user_id": int(r.user_id), "item_id": int(r.item_id)} for r in sample.itertuples()]
    status, body = post(service, "/v1/score/ranker", {"rows": rows})
    assert status == 200 and body["model"] == "ranker" and body["version"] == champion == scored.model.version
    assert [r["score"] for r in body["results"]] == sample["score"].tolist()
    status, one = post(service, "/v1/score/ranker", {"rows": rows[-1:]})
    assert status == 200 and one["results"] == body["results"][-1:]


def test_request_time_values_are_used_as_they_are(lake):
    conf = lake[0]
    spec = online.online_spec(conf, "ranker")
    assert spec.request_keys == ["item_id", "user_id"]  # item_stats (keyed by item) first, then the user's sets
    stores = {j.namespace: feature_store(conf, j.set) for j in spec.joins}
    model = online.OnlineModel(spec, stores)
    stored, given = model.features([{"user_id": 1, "item_id": 2}, {"user_id": 1, "item_id": 2, "item_price": 123.5}])
    assert given["item_price"] == 123.5 and stored["item_price"] != 123.5
    assert {k: v for k, v in given.items() if k != "item_price"} == {k: v for k, v in stored.items()
                                                                       if k != "item_price"}


def test_bad_requests_are_refused(lake, service):
    status, body = post(service, "/v1/score/ranker", {"rows": [{"user_id": 1}]})
    assert status == 422 and "no 'item_id'" in body["error"] and "every row needs item_id, user_id" in body["error"]
    status, body = post(service, "/v1/score/ranker", {"rows": [{"user_id": 1, "item_id": 2, "item_price": "x"}]})
    assert status == 422 and "item_price" in body["error"]
    status, body = post(service, "/v1/score/ranker", {"rows": []})
    assert status == 422
    status, body = post(service, "/v1/score/nope", {"rows": [{"user_id": 1, "item_id": 2}]})
    assert status == 404 and "ranker" in body["error"]
    for raw, message in ((b"{not json", "body: not JSON"), (b'{"row": []}', "expected an object with rows"),
                         (b'{"rows": [1]}', "expected a non-empty list of objects")):
        status, body = post(service, "/v1/score/ranker", raw)
        assert status == 422 and message in body["error"], (raw, body)
    with LookupClient(service.host, service.port) as client:
        status, schema = client.get("/openapi.json")
    assert status == 200 and "/v1/score/{model}" in schema["paths"]


def test_a_date_without_feature_rows_is_refused_and_switches_nothing(spark, lake):
    conf, _, _, done, _ = lake
    with pytest.raises(DataQualityError, match=r"item_stats: no row for dt=2026-11-09 \(from gold.item_stats\)"):
        materialize(spark, conf, dt.date(2026, 11, 9), "m2", ["item_stats"])
    assert feature_store(conf, "item_stats").current_version() == done["item_stats"]["version"]


def test_the_key_of_an_entity():
    assert online.entity_key([7]) == "7" and online.entity_key([7, "toys"]) == "7|toys"
    with pytest.raises(Exception, match="expected a string or an integer"):
        online.entity_key([1.5])


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_feature_sets_versions_are_listed_and_rolled_back(spark, lake, service, capsys):
    import json

    from lakeloop.cli import execute

    conf, args = lake[0], lake[4]
    assert execute("materialize", ["--date", RUN_DATE.isoformat(), "--feature-set", "item_stats", *args]).exit_code == 0
    store = feature_store(conf, "item_stats")
    newer = store.current_version()
    assert newer != lake[3]["item_stats"]["version"]
    capsys.readouterr()
    assert execute("serving", ["rollback", "--feature-set", "item_stats", "--json", *args]).exit_code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["namespace"] == "lakeloop.features.item_stats" and result["from"] == newer
    assert result["to"] == lake[3]["item_stats"]["version"] == store.current_version()
    status, body = post(service, "/v1/score/ranker", {"rows": [{"user_id": 1, "item_id": 2}]})
    assert status == 200


def test_a_moved_champion_is_picked_up_without_a_restart_or_a_failed_request(lake, service, tmp_path):
    import mlflow
    from lakeloop.train import registry

    conf, champion = lake[0], lake[1]
    # a job of this process pointing MLflow elsewhere neither blinds the watcher nor is moved by it
    before, elsewhere = mlflow.get_tracking_uri(), f"sqlite:///{tmp_path}/another-job.db"
    mlflow.set_tracking_uri(elsewhere)
    name, client = conf["mlflow.model_name"], registry.client(conf)
    first = client.get_model_version(name, champion)
    new = client.create_model_version(name, client.get_model_version_download_uri(name, champion), run_id=first.run_id)
    answers, stop = [], threading.Event()

    def ask() -> None:
        while not stop.is_set():
            answers.append(post(service, "/v1/score/ranker", {"rows": [{"user_id": 1, "item_id": 2}]}))

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        _wait_for(lambda: len(answers) > 5)
        client.set_registered_model_alias(name, registry.CHAMPION, new.version)
        _wait_for(lambda: answers[-1][1].get("version") == str(new.version))
        count = len(answers)
        _wait_for(lambda: len(answers) > count + 5)
    finally:
        stop.set()
        asking.join()
        client.set_registered_model_alias(name, registry.CHAMPION, champion)
        process_uri = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(before)
    assert process_uri == elsewhere
    assert all(status == 200 for status, _ in answers), [b for s, b in answers if s != 200][:3]
    versions = [body["version"] for _, body in answers]
    switched = versions.index(str(new.version))
    assert set(versions[:switched]) == {champion} and set(versions[switched:]) == {str(new.version)}
    assert len({body["results"][0]["score"] for _, body in answers}) == 1  # the same model, registered twice


def test_an_incremental_materialization_writes_only_changes_and_equals_a_full_one(spark, lake):
    from lakeloop.featuresets import load_specs
    from lakeloop.featuresets.build import Inputs, plan_bounds
    from lakeloop.lake import Lake
    from pyspark.sql import functions as F

    conf, done, name = lake[0], lake[3], "user_activity"
    store, full = feature_store(conf, name), done[name]
    same = materialize(spark, conf, RUN_DATE, "i0", [name], incremental=True)[name]
    assert (same["incremental"], same["written"], same["copied"], same["keys"]) == (True, 0, full["keys"], full["keys"])
    earlier = materialize(spark, conf, RUN_DATE - dt.timedelta(days=1), "d0", [name])[name]
    later = materialize(spark, conf, RUN_DATE, "i1", [name], incremental=True)[name]
    assert later["incremental"] and later["copied"] == earlier["keys"] and 0 < later["written"] < later["keys"]
    # the version holds exactly what a full load writes: every entity's JSON and the absent row, no other key
    fs = load_specs(conf).sets[name]
    inputs = Inputs(spark, Lake.from_conf(conf), plan_bounds([fs], [], load_specs(conf).sets, RUN_DATE))
    rows = set_rows(spark, Lake.from_conf(conf), fs, inputs, RUN_DATE)
    expected = {r[0]: r[1].encode() for r in set_frame(fs, rows).select("key", F.to_json("features")).collect()}
    inputs.close()
    assert online.ABSENT_KEY in expected and store.load_info(later["version"]).count == len(expected) == later["keys"]
    assert store.get_version_many(later["version"], list(expected)) == list(expected.values())
