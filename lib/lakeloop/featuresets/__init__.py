"""Declarative feature sets, labels and point-in-time training sets (``docs/features.md``).

A feature set (``conf/features/<name>.yaml``) names a source table, its entity key columns and
event-time column, and features of eight kinds -- ``aggregate``, ``list``, ``decay``, ``sessions``,
``derived``, ``dimension``, ``transform``, ``bag_of_words`` -- all computed *as of* a time ``t`` from the source
rows with ``t - window <= time < t`` (``<= t`` with ``include_t``).  A training set
(``conf/training_sets/<name>.yaml``) joins feature sets to label rows point in time.  The engine
knows no column of any app: every name comes from conf.
"""

from lakeloop.featuresets.build import build_all, build_range, feature_frame, set_time
from lakeloop.featuresets.compute import compute
from lakeloop.featuresets.load import load_specs
from lakeloop.featuresets.scope import Scope, day_start
from lakeloop.featuresets.spec import FeatureSet, Specs, TrainingSpec, parse_duration
from lakeloop.featuresets.training import training_frame

__all__ = ["build_all", "build_range", "feature_frame", "set_time", "compute", "Scope", "day_start", "FeatureSet",
           "Specs",
           "TrainingSpec", "load_specs", "parse_duration", "training_frame"]
