"""Layered, validated configuration.

``conf/base.yaml`` is merged with ``conf/<env>.yaml`` and then with command-line
overrides (``--set key=value``).  Keys are dotted paths; nested YAML mappings and
flat dotted keys are equivalent (``spark: {executor.memory: 2g}`` is
``spark.executor.memory``).  Every key must be declared in :data:`SPEC`; an
unknown key, a value of the wrong type or a missing required value raises
:class:`ConfError` naming the key and the file it came from.

String values may reference environment variables as ``${NAME}`` or
``${NAME:-default}`` so that credentials never live in the files.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lakeloop import conf_checks
from lakeloop.paths import project_root

__all__ = ["Conf", "ConfError", "Field", "SPEC", "DEFAULTS", "load_conf", "find_conf_dir", "ENVS"]

ENVS = ("local", "standalone", "yarn")
CLI = "--set"


class ConfError(ValueError):
    """A configuration file or override is invalid; the message names key and file."""


@dataclass(frozen=True)
class Field:
    """Declaration of one configuration key.

    ``type`` is one of ``str``, ``int``, ``float``, ``bool``, ``size`` (a JVM memory
    size such as ``4g``), ``dict``, ``list`` or ``enum`` (with ``choices``).
    """

    type: str
    required: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""
    flat_keys: bool = False  # dict whose keys contain dots themselves (spark.extra)


def _f(type_: str, doc: str = "", **kw: Any) -> Field:
    return Field(type_, doc=doc, **kw)


# Every configuration key lakeloop understands.  ``*`` matches one key segment.
SPEC: dict[str, Field] = {
    # -- locations -------------------------------------------------------------------
    "warehouse": _f("str", "root URI of the Delta tables (bronze/, silver/, gold/, _state/)", required=True),
    "landing": _f("str", "root URI of the raw landing files", required=True),
    "log_level": _f("enum", "driver and Spark log level", choices=("ERROR", "WARN", "INFO", "DEBUG")),
    # -- Spark ----------------------------------------------------------------------------
    "spark.master": _f("str", "local[N], local-cluster[...], spark://host:port or yarn", required=True),
    "spark.submit.deployMode": _f("enum", "client or cluster", choices=("client", "cluster")),
    "spark.driver.memory": _f("size"),
    "spark.driver.cores": _f("int"),
    "spark.driver.extraJavaOptions": _f("str", nullable=True),
    "spark.executor.cores": _f("int"),
    "spark.executor.memory": _f("size"),
    "spark.executor.memoryOverhead": _f("size", nullable=True),
    "spark.executor.instances": _f("int", nullable=True),
    "spark.executor.extraJavaOptions": _f("str", nullable=True),
    "spark.cores.max": _f("int", "standalone: total cores for the application", nullable=True),
    "spark.dynamicAllocation.enabled": _f("bool"),
    "spark.dynamicAllocation.minExecutors": _f("int"),
    "spark.dynamicAllocation.maxExecutors": _f("int"),
    "spark.dynamicAllocation.initialExecutors": _f("int", nullable=True),
    "spark.dynamicAllocation.shuffleTracking.enabled": _f("bool"),
    "spark.shuffle.service.enabled": _f("bool"),
    "spark.scheduler.mode": _f("enum", choices=("FIFO", "FAIR")),
    "spark.scheduler.allocation.file": _f("str", "FAIR pools file, shipped with --files", nullable=True),
    "spark.scheduler.pool": _f("str", "FAIR pool the jobs submit to", nullable=True),
    "spark.sql.adaptive.enabled": _f("bool"),
    "spark.sql.adaptive.coalescePartitions.enabled": _f("bool"),
    "spark.sql.adaptive.skewJoin.enabled": _f("bool"),
    "spark.sql.adaptive.advisoryPartitionSizeInBytes": _f("size"),
    "spark.sql.shuffle.partitions": _f("int"),
    "spark.sql.files.maxPartitionBytes": _f("size"),
    "spark.sql.session.timeZone": _f("str"),
    "spark.sql.execution.arrow.pyspark.enabled": _f("bool"),
    "spark.sql.execution.arrow.maxRecordsPerBatch": _f("int"),
    "spark.ui.enabled": _f("bool"),
    "spark.ui.showConsoleProgress": _f("bool"),
    "spark.yarn.queue": _f("str", nullable=True),
    "spark.yarn.maxAppAttempts": _f("int"),
    "spark.extra": _f("dict", "any other spark.* properties, passed through unvalidated", flat_keys=True),
    # -- deployment (docs/deploy.md) ---------------------------------------------------------------------
    "deploy.forward_env": _f("list", "names of environment variables the driver passes on to its executors "
                             "(spark.executorEnv, set at session start; never on a command line)"),
    "deploy.shared_paths": _f("list", "local directories mounted at the same path on every cluster host (NFS); "
                              "state under them survives a driver's container"),
    # -- GPU resource scheduling ----------------------------------------------------------------
    "gpu.enabled": _f("bool", "request GPUs for executors and training tasks"),
    "gpu.executor_amount": _f("int", "spark.executor.resource.gpu.amount"),
    "gpu.task_amount": _f("float", "spark.task.resource.gpu.amount"),
    "gpu.discovery_script": _f("str", "GPU discovery script; default: the one shipped in lakeloop/resources",
                               nullable=True),
    # -- Python environment shipped to the cluster ----------------------------------------------
    "python.archive": _f("str", "venv-pack/conda-pack archive shipped with --archives (YARN, standalone)",
                         nullable=True),
    "python.executable": _f("str", "Python used by driver and workers when no archive is shipped",
                            nullable=True),
    # -- Spark 3.5 side runtime (BigDL; docs/bigdl.md) --------------------------------------------
    "runtime.spark35.python": _f("str", "Python of the Spark 3.5 runtime (./setup.sh spark35); relative to the "
                                 "project"),
    "runtime.spark35.archive": _f("str", "packed Spark 3.5 runtime shipped with --archives on a cluster "
                                  "(EXTRAS=spark35 scripts/pack-env.sh)", nullable=True),
    "runtime.spark35.spark_home": _f("str", "Spark 3.5 installation used on a cluster master (default: the "
                                     "runtime's pip-installed pyspark)", nullable=True),
    "runtime.spark35.backends": _f("list", "training backends whose train and infer jobs run in the Spark 3.5 "
                                   "runtime"),
    # -- Delta tables ----------------------------------------------------------------------------
    "delta.storage_options": _f("dict", "delta-rs storage options (object stores, HDFS)"),
    "delta.engine": _f("enum", "tables.read/write: delta-spark when its jars are loaded (auto), or always one engine",
                       choices=("auto", "bridge", "delta-spark")),
    "delta.vacuum_retention_hours": _f("int"),
    "delta.target_file_size": _f("int", "bytes, target size of the files ingest and curate write (by an "
                                         "estimate of row size) and optimize compacts to"),
    "optimize.tables": _f("list", "tables the optimize job compacts and vacuums; empty: every table of the "
                          "bronze, silver and gold layers"),
    "optimize.z_order": _f("dict", "columns to z-order by, per table: {'<layer>.<table>': [<column>, ...]}",
                           flat_keys=True),
    # -- sources and data quality ----------------------------------------------------------------
    "sources": _f("dict", "source name -> {format, schema, ...}; see docs/sources.md"),
    "schema_dir": _f("str", "directory of the source schema files; default: schemas/ beside conf/",
                     nullable=True),
    "ingest.ledger_table": _f("str", "file ledger of the ingest job, a table name layer.name"),
    "curate.max_quarantine_rate": _f("float"),
    "validate.psi_threshold": _f("float"),
    "validate.enabled": _f("bool"),
    "validate.tables": _f("list", "tables jobs/validate.py profiles when no --table is given"),
    "validate.column_thresholds": _f("dict", "per-column PSI thresholds: {'silver.events.price': 0.4}",
                                     flat_keys=True),
    "validate.bins": _f("int", "quantile bins of the numeric drift histograms"),
    "validate.top_k": _f("int", "most frequent values kept per string column"),
    "validate.max_categories": _f("int", "string columns with more distinct values (ids) are not drift-checked"),
    "validate.reference": _f("enum", "what a partition is compared with: the previous run, a trailing window of "
                             "runs, or a pinned date", choices=("previous", "window", "pinned")),
    "validate.reference_runs": _f("int", "latest partitions before the run date pooled into the reference "
                                  "with reference: window"),
    "validate.reference_date": _f("str", "the reference partition with reference: pinned (YYYY-MM-DD)",
                                  nullable=True),
    "validate.columns": _f("dict", "per-column policy {'<table>.<column>': ignore | warn | fail}; default fail",
                           flat_keys=True),
    "validate.allow_empty": _f("list", "tables of sparse sources: an empty partition is a warning, not a failure"),
    "features.lookback_days": _f("int", "days of events behind every feature"),
    "features.max_list_length": _f("int", "most recent entries kept per favour list"),
    "features.half_life_days": _f("float", "half-life of the time-decayed affinity features"),
    "features.label_window_days": _f("int", "training labels: days after the label time"),
    "features.label_types": _f("list", "event types that make a positive training label"),
    "features.negatives_per_positive": _f("int", "sampled non-interacted items per positive"),
    "features.seed": _f("int", "seed of the negative sampling"),
    "features.spec_dir": _f("str", "features/, training_sets/ spec folder; null: conf dir", nullable=True),
    "features.sets": _f("list", "feature and training sets the features job builds; null: all", nullable=True),
    # -- serving store --------------------------------------------------------------------------------
    "serving.store": _f("enum", "serving store backend: embedded SQLite file or a Redis server",
                        choices=("sqlite", "redis")),
    "serving.namespace": _f("str", "key prefix of the serving keyspace: {namespace}:{version}:{key}"),
    "serving.keep_versions": _f("int", "committed versions kept after a switch, the current one included"),
    "serving.ttl_seconds": _f("int", "expiry of loaded keys in seconds; null: no expiry", nullable=True),
    "serving.batch_size": _f("int", "keys per write command (one round trip) during a load"),
    "serving.redis.host": _f("str"),
    "serving.redis.port": _f("int"),
    "serving.redis.db": _f("int"),
    "serving.redis.password_env": _f("str", "name of the environment variable holding the Redis password",
                                     nullable=True),
    "serving.sqlite.path": _f("str", "SQLite file; null: <warehouse>/_serving/serving.sqlite", nullable=True),
    "serving.loading_grace_seconds": _f("int", "a version still loading this long after it began is removed "
                                        "as left by a killed load (serving gc, and after every commit)"),
    # -- the lookup service (lakeloop.serve_api, uvicorn) ---------------------------------------------
    "serve.host": _f("str", "address the service binds"),
    "serve.port": _f("int", "port the service listens on; 0 picks a free one"),
    "serve.workers": _f("int", "worker processes, each with its own event loop and store connection"),
    "serve.backlog": _f("int", "listen backlog: connections the kernel queues before they are accepted"),
    "serve.keepalive_timeout_s": _f("float", "seconds an idle connection (new or between requests) stays open"),
    "serve.request_timeout_s": _f("float", "seconds a client has to send one request's headers and body (408)"),
    "serve.drain_timeout_s": _f("float", "on SIGTERM: seconds in-flight requests get to finish"),
    "serve.max_body_bytes": _f("int", "largest request body (413 beyond)"),
    "serve.max_url_bytes": _f("int", "longest request target, path and query (414 beyond)"),
    "serve.max_header_bytes": _f("int", "largest request header block (431 beyond)"),
    "serve.max_batch_keys": _f("int", "most keys in one batch lookup (422 beyond)"),
    "serve.store_timeout_s": _f("float", "seconds a Redis read or connect may take before the request fails (503)"),
    "serve.access_log": _f("bool", "log one line per request"),
    "serve.description": _f("str", "description of the service in its OpenAPI document; null: a generic one",
                            nullable=True),
    "serve.routes": _f("dict", "the app's lookup routes: name -> {key, key_type (int or str), value_field, "
                       "batch_field, docs}: GET /v1/<name>/{key}, POST /v1/<name>; see docs/serving.md"),
    "serve.online.models": _f("list", "model specs (conf/models/<name>.yaml) scored online at POST /v1/score/<name> "
                              "from their materialized feature sets (the materialize job)"),
    "serve.online.refresh_s": _f("float", "seconds between checks of an online model's @champion alias; a moved "
                                 "alias is loaded next to the old version, then switched to"),
    "serve.online.cache_entries": _f("int", "feature rows each worker keeps per online model, by (namespace, "
                                     "version, key); 0: none (docs/serving.md, Online scoring)"),
    "serve.online.compile": _f("bool", "score a tree model with the compiled evaluator (lakeloop.trees) when it "
                               "gives exactly xgboost's scores"),
    "serve.online.read_ahead_rows": _f("int", "requests of at most this many rows read a join keyed by a column an "
                                       "earlier join adds in the same round trip where the store can (Redis: the "
                                       "keys built on the server); 0: never"),
    # -- training, MLflow tracking and registry -------------------------------------------------------
    "mlflow.tracking_uri": _f("str", "MLflow tracking URI; null: sqlite:///<warehouse>/_mlflow/mlflow.db",
                              nullable=True),
    "mlflow.registry_uri": _f("str", "MLflow model registry URI; null: the tracking URI", nullable=True),
    "mlflow.artifact_root": _f("str", "artifact location of a new experiment; null: <warehouse>/_mlflow/artifacts",
                               nullable=True),
    "mlflow.experiment": _f("str", "MLflow experiment of the training runs"),
    "mlflow.model_name": _f("str", "registered model name; versions get the @challenger/@champion aliases"),
    "train.backend": _f("str", "training backend, a module of lakeloop.train (xgboost, tfos, torch, bigdl)"),
    "train.table": _f("str", "training set table, layer.name"),
    "train.days": _f("int", "dt partitions up to --date the model trains on"),
    "train.holdout_fraction": _f("float", "share of users (seeded hash) held out for validation and the gate"),
    "train.seed": _f("int", "seed of the holdout split, label shuffling and tuning"),
    "train.num_workers": _f("int", "Spark tasks that train one model together (xgboost num_workers)"),
    "train.params": _f("dict", "backend hyper-parameters over the backend's defaults"),
    "train.gate_metric": _f("enum", "metric the evaluation gate compares on the holdout (one of the task's)",
                            choices=("auc", "pr_auc", "logloss", "rmse", "mae", "r2", "accuracy", "macro_f1")),
    "train.gate_margin": _f("float", "how much the challenger must beat the champion (or the baseline) by"),
    "train.gate_max_rows": _f("int", "holdout rows scored by the gate (seeded sample above this)"),
    "train.infra_check_rows": _f("int", "rows the infra check predicts with models:/<name>@challenger"),
    "train.tune_space": _f("dict", "tuning search space: param -> list of values (random draws)"),
    "train.tune_sample_rows": _f("int", "training rows broadcast to every tuning trial"),
    # -- model specs (conf/models/<name>.yaml; docs/training.md) -----------------------------------------
    "train.model": _f("str", "model spec trained by default (a conf/models/<name>.yaml); null: the only one",
                      nullable=True),
    "train.models_dir": _f("str", "folder of the model specs; null: models/ in the conf dir", nullable=True),
    "train.task": _f("enum", "model task", choices=("binary", "regression", "multiclass")),
    "train.label": _f("str", "label column of the training set"),
    "train.keys": _f("list", "key columns of the training set (never features)"),
    "train.time_column": _f("str", "label time column (never a feature; the time split orders by it)",
                            nullable=True),
    "train.features": _f("list", "feature columns; null: every numeric column but keys, label, time, dt",
                         nullable=True),
    "train.classes": _f("int", "multiclass: number of classes (labels 0..classes-1); null: from the training "
                        "set", nullable=True),
    "train.split": _f("enum", "holdout split: seeded hash of a column, latest label times, or random rows",
                      choices=("hash", "time", "random")),
    "train.split_column": _f("str", "column hashed by the hash split", nullable=True),
    "train.split_tolerance": _f("float", "largest allowed |realised - target| holdout fraction"),
    "train.gate_confidence": _f("float", "one-sided confidence of the bootstrap lower bound of the gate"),
    "train.gate_resamples": _f("int", "paired bootstrap resamples of the gate"),
    "train.feature_baselines": _f("bool", "single-feature baselines (binary, regression)"),
    "train.baselines": _f("dict", "domain baselines: name -> {column, transform: clip | max_scale}"),
    # -- bulk inference --------------------------------------------------------------------------
    "infer.candidates_per_user": _f("int", "candidate items scored per user (favourite categories' popular "
                                    "items and the user's recent items)"),
    "infer.categories_per_user": _f("int", "favourite categories (by decayed affinity) candidates come from"),
    "closed_loop.reactions": _f("dict", "reaction counts of the sample data's manifests shown in the closed-loop "
                                "table after the served lists, count -> column title", flat_keys=True),
    "infer.top_n": _f("int", "best-scored items per user pushed to the serving store"),
    "infer.batch_size": _f("int", "rows per Arrow batch given to the model "
                           "(spark.sql.execution.arrow.maxRecordsPerBatch while scoring)"),
    "infer.table": _f("str", "predictions table, layer.name"),
    "infer.min_rows": _f("int", "fewest scored rows a run may publish (fewer: exit 3, serving untouched)"),
    "infer.read_files": _f("bool", "score a table on disk (scoring features: rows of rows: {table}) by reading "
                           "its files in the tasks (the file path); false: always through mapInArrow"),
    # -- speed layer (jobs/stream.py) ------------------------------------------------------------------
    "stream.source": _f("enum", "where streamed events come from: landing files or a Kafka topic",
                        choices=("files", "kafka")),
    "stream.trigger": _f("enum", "availableNow (cron-driven) or processingTime (continuous)",
                         choices=("availableNow", "processingTime")),
    "stream.interval": _f("str", "processingTime trigger interval, e.g. '10 seconds'"),
    "stream.checkpoint_dir": _f("str", "checkpoint root, one folder per query; null: <warehouse>/_checkpoints",
                                nullable=True),
    "stream.max_files_per_trigger": _f("int", "landing files per micro-batch; null: all new files",
                                       nullable=True),
    "stream.window": _f("str", "event-time window of the real-time counts, e.g. '10 minutes'"),
    "stream.watermark": _f("str", "how late an event may arrive and still update its window"),
    "stream.realtime_table": _f("str", "Delta table of the real-time window counts, layer.name"),
    "stream.realtime_ttl_seconds": _f("int", "expiry of the real-time view in the serving store", nullable=True),
    "stream.realtime.entities": _f("dict", "entity name -> integer key column of the events; each event counts "
                                   "once per entity; empty: no real-time view"),
    "stream.realtime.type_column": _f("str", "event column the counts compare with their event type",
                                      nullable=True),
    "stream.realtime.counts": _f("dict", "count column -> value of the type column it counts (besides events, "
                                 "which counts all)"),
    "stream.realtime.lookup_entity": _f("str", "entity whose views are stored under the bare key, merged with the "
                                        "batch values by lookup; the others under <entity>:<key>", nullable=True),
    "stream.realtime.group": _f("dict", "{table, key, column, field}: the latest column of table per key, joined "
                                "to each event on key; each window collects its distinct values into field",
                                nullable=True),
    "stream.kafka.bootstrap_servers": _f("str", "Kafka brokers (host:port,...)", nullable=True),
    "stream.kafka.topic": _f("str", "Kafka topic of the source; null: the source name", nullable=True),
    "stream.kafka.starting_offsets": _f("str", "earliest or latest (first start only)"),
    "stream.kafka.options": _f("dict", "other options of Spark's Kafka source (kafka.security.protocol, ...)",
                               flat_keys=True),
    # -- demo / sample data --------------------------------------------------------------------------
    "datagen.seed": _f("int"),
    "datagen.events": _f("int"),
    "datagen.users": _f("int"),
    "datagen.items": _f("int"),
    "datagen.bad_fraction": _f("float"),
    "datagen.closed_loop": _f("bool", "users react to the items infer.table served the day before (demo loop)"),
}


# The default of every engine key that conf files may leave out: the one place defaults live (code reads
# ``conf[key]``, never ``conf.get(key) or literal``).  Keys of an app (its sources, tables and feature
# settings) have no default here: they come from the app's conf files.  Spark properties have none either:
# a Spark key that is not set keeps Spark's own default.
DEFAULTS: dict[str, Any] = {
    "log_level": "WARN",
    "spark.ui.showConsoleProgress": True,
    "deploy.forward_env": [],
    "deploy.shared_paths": [],
    "gpu.enabled": False,
    "gpu.executor_amount": 1,
    "gpu.task_amount": 1.0,
    "gpu.discovery_script": None,
    "python.archive": None,
    "python.executable": None,
    "runtime.spark35.python": ".venv-spark35/bin/python",
    "runtime.spark35.archive": None,
    "runtime.spark35.spark_home": None,
    "runtime.spark35.backends": ["bigdl"],
    "delta.engine": "auto",
    "delta.storage_options": {},
    "delta.vacuum_retention_hours": 168,
    "delta.target_file_size": 134217728,
    "optimize.tables": [],
    "optimize.z_order": {},
    "sources": {},
    "schema_dir": None,
    "ingest.ledger_table": "_state.ingest_ledger",
    "curate.max_quarantine_rate": 0.05,
    "validate.psi_threshold": 0.25,
    "validate.enabled": True,
    "validate.tables": [],
    "validate.column_thresholds": {},
    "validate.bins": 10,
    "validate.top_k": 20,
    "validate.max_categories": 100,
    "validate.reference": "previous",
    "validate.reference_runs": 7,
    "validate.reference_date": None,
    "validate.columns": {},
    "validate.allow_empty": [],
    "features.spec_dir": None,
    "features.sets": None,
    "serving.store": "sqlite",
    "serving.namespace": "lakeloop",
    "serving.keep_versions": 2,
    "serving.ttl_seconds": None,
    "serving.batch_size": 2000,
    "serving.redis.host": "127.0.0.1",
    "serving.redis.port": 6379,
    "serving.redis.db": 0,
    "serving.redis.password_env": None,
    "serving.sqlite.path": None,
    "serving.loading_grace_seconds": 21600,
    "serve.host": "127.0.0.1",
    "serve.port": 8080,
    "serve.workers": 1,
    "serve.backlog": 2048,
    "serve.keepalive_timeout_s": 5.0,
    "serve.request_timeout_s": 10.0,
    "serve.drain_timeout_s": 10.0,
    "serve.max_body_bytes": 1048576,
    "serve.max_url_bytes": 8192,
    "serve.max_header_bytes": 16384,
    "serve.max_batch_keys": 1000,
    "serve.store_timeout_s": 2.0,
    "serve.access_log": False,
    "serve.description": None,
    "serve.routes": {},
    "serve.online.models": [],
    "serve.online.refresh_s": 10.0,
    "serve.online.cache_entries": 50_000,
    "serve.online.compile": True,
    "serve.online.read_ahead_rows": 8,
    "mlflow.tracking_uri": None,
    "mlflow.registry_uri": None,
    "mlflow.artifact_root": None,
    "mlflow.experiment": "lakeloop-train",
    "train.backend": "xgboost",
    "train.days": 1,
    "train.holdout_fraction": 0.2,
    "train.seed": 7,
    "train.num_workers": 2,
    "train.params": {},
    "train.gate_metric": "auc",
    "train.gate_margin": 0.005,
    "train.gate_max_rows": 200000,
    "train.infra_check_rows": 5,
    "train.tune_space": {"max_depth": [3, 4, 6, 8], "learning_rate": [0.03, 0.1, 0.3],
                         "n_estimators": [50, 100, 200], "min_child_weight": [1, 5]},
    "train.tune_sample_rows": 100000,
    "train.model": None,
    "train.models_dir": None,
    "train.task": "binary",
    "train.label": "label",
    "train.keys": [],
    "train.time_column": None,
    "train.features": None,
    "train.classes": None,
    "train.split": "random",
    "train.split_column": None,
    "train.split_tolerance": 0.1,
    "train.gate_confidence": 0.9,
    "train.gate_resamples": 200,
    "train.feature_baselines": True,
    "train.baselines": {},
    "infer.min_rows": 1,
    "closed_loop.reactions": {},
    "infer.top_n": 10,
    "infer.batch_size": 10000,
    "infer.table": "gold.predictions",
    "infer.read_files": True,
    "stream.source": "files",
    "stream.trigger": "availableNow",
    "stream.interval": "10 seconds",
    "stream.checkpoint_dir": None,
    "stream.max_files_per_trigger": None,
    "stream.window": "10 minutes",
    "stream.watermark": "10 minutes",
    "stream.realtime_table": "gold.realtime_counts",
    "stream.realtime_ttl_seconds": 3600,
    "stream.realtime.entities": {},
    "stream.realtime.type_column": None,
    "stream.realtime.counts": {},
    "stream.realtime.lookup_entity": None,
    "stream.realtime.group": None,
    "stream.kafka.bootstrap_servers": None,
    "stream.kafka.topic": None,
    "stream.kafka.starting_offsets": "earliest",
    "stream.kafka.options": {},
}


# keys of earlier versions -> what replaced them (a conf still setting one stops with this hint)
RETIRED: dict[str, str] = {
    "stream.items_table": "the real-time view's group table is stream.realtime.group.table (docs/streaming.md)",
}

# set per thread with SparkContext.setLocalProperty, not a SparkConf entry
_LOCAL_PROPERTIES = {"spark.scheduler.pool"}

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SIZE = re.compile(r"^\d+(\.\d+)?\s*[kmgtp]?b?$", re.IGNORECASE)


def _field_for(key: str) -> tuple[str, Field] | None:
    if key in SPEC:
        return key, SPEC[key]
    for pattern, field in SPEC.items():
        if "*" in pattern and fnmatch.fnmatchcase(key, pattern) and key.count(".") == pattern.count("."):
            return pattern, field
    return None


def _is_leaf_container(key: str) -> bool:
    found = _field_for(key)
    return found is not None and found[1].type in ("dict", "list")


def _flatten(tree: Mapping[str, Any], origin: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for raw_key, value in tree.items():
        if not isinstance(raw_key, str):
            raise ConfError(f"{origin}: key {raw_key!r} under {prefix or 'top level'} must be a string")
        key = f"{prefix}{raw_key}"
        if isinstance(value, Mapping) and not _is_leaf_container(key):
            if not value:
                raise ConfError(f"{origin}: {key}: empty section")
            yield from _flatten(value, origin, key + ".")
        else:
            yield key, value


def _interpolate(value: Any, key: str, origin: str) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfError(f"{origin}: {key}: environment variable {name} is not set")

        return _ENV_REF.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: _interpolate(v, f"{key}.{k}", origin) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, key, origin) for v in value]
    return value


def _check_type(key: str, value: Any, field: Field, origin: str) -> Any:
    def bad(expected: str) -> ConfError:
        return ConfError(f"{origin}: {key}: expected {expected}, got {value!r}")

    if value is None:
        if field.nullable or not field.required:
            return None
        raise ConfError(f"{origin}: {key}: a value is required")
    t = field.type
    if t == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad("a string")
        return str(value)
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if t == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if t == "size":
        if isinstance(value, bool) or not _SIZE.match(str(value)):
            raise bad("a memory size such as 512m or 4g")
        return str(value)
    if t == "enum":
        if value not in field.choices:
            raise bad("one of " + ", ".join(field.choices))
        return value
    if t == "dict":
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        return dict(value)
    if t == "list":
        if not isinstance(value, list):
            raise bad("a list")
        return value
    raise AssertionError(f"unknown field type {t!r} for {key}")


def parse_override(item: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as YAML (``8g``, ``4``, ``true``)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfError(f"{CLI} {item!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfError(f"{CLI} {key}: value {raw!r} is not valid YAML: {exc}") from None
    return key, value


def find_conf_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate the conf directory.

    Order: ``explicit``, ``$LAKELOOP_CONF_DIR``, ``./conf``, the working directory when the
    files were shipped there by ``spark-submit --files``, then the project's ``conf/``
    next to ``lib/``.
    """
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("LAKELOOP_CONF_DIR"):
        candidates.append(Path(os.environ["LAKELOOP_CONF_DIR"]))
    candidates += [Path("conf"), Path("."), project_root() / "conf"]
    for c in candidates:
        if (c / "base.yaml").is_file():
            return c.resolve()
    if explicit:
        raise ConfError(f"conf directory {explicit}: base.yaml not found")
    raise ConfError("no conf directory with base.yaml found; set LAKELOOP_CONF_DIR or pass --conf-dir")


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=conf_checks.UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfError(f"{path}: top level must be a mapping")
    return data


class Conf(Mapping[str, Any]):
    """A merged, validated configuration: a read-only mapping of dotted keys to values."""

    def __init__(self, values: Mapping[str, Any], origins: Mapping[str, str], env: str,
                 conf_dir: Path | None = None) -> None:
        self._values = dict(values)
        self._origins = dict(origins)
        self.env = env
        self.conf_dir = conf_dir

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Conf(env={self.env!r}, keys={len(self)})"

    def origin(self, key: str) -> str:
        """The file (or ``--set``) that gave ``key`` its value."""
        return self._origins.get(key, "<default>")

    def section(self, prefix: str) -> dict[str, Any]:
        """Keys under ``prefix.`` with the prefix removed."""
        p = prefix.rstrip(".") + "."
        return {k[len(p):]: v for k, v in self._values.items() if k.startswith(p)}

    def with_overrides(self, overrides: Mapping[str, Any]) -> Conf:
        """A copy with ``overrides`` merged in and validated (for tests and notebooks)."""
        values, origins = dict(self._values), dict(self._origins)
        _merge_flat(values, origins, overrides.items(), "override")
        _validate(values, origins)
        return Conf(values, origins, self.env, self.conf_dir)

    def path(self, key: str) -> str:
        """A location key as an absolute path or URI (relative paths resolve against the cwd)."""
        return resolve_uri(self[key])

    def table_uri(self, name: str) -> str:
        """URI of table ``layer.name`` (``silver.events`` -> ``<warehouse>/silver/events``)."""
        parts = name.split(".")
        if len(parts) != 2 or not all(re.fullmatch(r"[A-Za-z0-9_]+", p) for p in parts):
            raise ValueError(f"table name {name!r}: expected layer.name, e.g. silver.events")
        return f"{self.path('warehouse').rstrip('/')}/{parts[0]}/{parts[1]}"

    def spark_properties(self) -> dict[str, str]:
        """Every Spark property set in conf, as strings, GPU settings included."""
        props: dict[str, str] = {}
        for key, value in self._values.items():
            if key == "spark.extra":
                props.update({str(k): _spark_str(v) for k, v in value.items() if v is not None})
            elif key.startswith("spark.") and key not in _LOCAL_PROPERTIES and value is not None:
                props[key] = _spark_str(value)
        if self.get("gpu.enabled"):
            props["spark.executor.resource.gpu.amount"] = str(self.get("gpu.executor_amount", 1))
            props["spark.task.resource.gpu.amount"] = _spark_str(self.get("gpu.task_amount", 1.0))
            props["spark.executor.resource.gpu.discoveryScript"] = self.gpu_discovery_script()
        return props

    def gpu_discovery_script(self) -> str:
        script = self.get("gpu.discovery_script")
        if script:
            return script
        return str(Path(__file__).resolve().parent / "resources" / "get_gpus_resources.sh")


def _spark_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def resolve_uri(value: str) -> str:
    """Absolute local path for a relative/``file:`` location; other URIs are returned as they are."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value) and not value.startswith("file://"):
        return value
    if value.startswith("file://"):
        value = value[len("file://"):]
    return str(Path(value).expanduser().resolve())


def hadoop_uri(value: str) -> str:
    """:func:`resolve_uri` for Spark and Hadoop: a local path as a ``file://`` URI, which a bare path is not where
    the default file system is another (HDFS on YARN).  Not percent-encoded, as Hadoop's ``Path`` wants it."""
    uri = resolve_uri(value)
    return uri if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri) else "file://" + uri


def _into_container(key: str, value: Any) -> tuple[str, Any]:
    """``sources.events.format=x`` -> ``("sources", {"events": {"format": "x"}})``."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head, rest = ".".join(parts[:i]), parts[i:]
        found = _field_for(head)
        if found is not None and found[1].type == "dict":
            if found[1].flat_keys:
                return head, {".".join(rest): value}
            for part in reversed(rest):
                value = {part: value}
            return head, value
    return key, value


def _merge_flat(values: dict[str, Any], origins: dict[str, str],
                items: Iterable[tuple[str, Any]], origin: str) -> None:
    for key, value in items:
        if _field_for(key) is None:
            key, value = _into_container(key, value)
        found = _field_for(key)
        if found is None and key in RETIRED:
            raise ConfError(f"{origin}: {key}: no longer a key; {RETIRED[key]}")
        if found is None:
            hint = _close_match(key)
            raise ConfError(f"{origin}: unknown key {key!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
        value = _interpolate(value, key, origin)
        if found[1].type == "dict" and isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
            value = _deep_merge(values[key], value)
        values[key] = _check_type(key, value, found[1], origin)
        origins[key] = origin


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _close_match(key: str) -> str | None:
    import difflib

    names = [k for k in SPEC if "*" not in k]
    hits = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return hits[0] if hits else None


def _validate(values: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    conf_checks.check_ranges(values, origins, SPEC, ConfError)
    for key, field in SPEC.items():
        if field.required and "*" not in key and values.get(key) is None:
            where = origins.get(key, "base.yaml and the env file")
            raise ConfError(f"{where}: {key}: a value is required")
    lo, hi = values.get("spark.dynamicAllocation.minExecutors"), values.get("spark.dynamicAllocation.maxExecutors")
    if lo is not None and hi is not None and lo > hi:
        raise ConfError(f"{origins.get('spark.dynamicAllocation.minExecutors')}: "
                        f"spark.dynamicAllocation.minExecutors ({lo}) > maxExecutors ({hi})")


def load_conf(env: str = "local", overrides: Iterable[str] | Mapping[str, Any] = (),
              conf_dir: str | os.PathLike[str] | None = None) -> Conf:
    """Load ``base.yaml`` + ``<env>.yaml`` + overrides from ``conf_dir`` and validate them.

    >>> conf = load_conf("local", ["spark.executor.memory=8g"])  # doctest: +SKIP
    >>> conf["spark.executor.memory"]  # doctest: +SKIP
    '8g'
    """
    directory = find_conf_dir(conf_dir)
    env_file = directory / f"{env}.yaml"
    if not env_file.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "base")
        raise ConfError(f"unknown env {env!r}: {env_file} not found (known: {', '.join(known)})")
    values: dict[str, Any] = {k: copy.deepcopy(v) for k, v in DEFAULTS.items()}
    origins: dict[str, str] = {}
    for path in (directory / "base.yaml", env_file):
        _merge_flat(values, origins, _flatten(_read_yaml(path), str(path)), str(path))
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = [parse_override(o) for o in overrides]
    _merge_flat(values, origins, items, CLI)
    _validate(values, origins)
    return Conf(values, origins, env, directory)


def _default_text(value: Any) -> str:
    return json.dumps(value)


def describe() -> str:
    """A Markdown table of every configuration key (``python -m lakeloop.conf`` prints it)."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, f in SPEC.items():
        kind = f.type + (f" ({' / '.join(f.choices)})" if f.choices else "") + (", nullable" if f.nullable else "")
        default = "required" if f.required else (f"`{_default_text(DEFAULTS[key])}`" if key in DEFAULTS else "")
        rows.append(f"| `{key}` | {kind} | {default} | {f.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(describe(), end="")
