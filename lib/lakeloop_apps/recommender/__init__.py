"""The built-in recommender app.

Its feature sets and training set are conf files (``conf/features/*.yaml``,
``conf/training_sets/training_set.yaml``) computed by :mod:`lakeloop.featuresets`; its model spec
``conf/models/ranker.yaml`` scores the candidate pairs of :mod:`lakeloop_apps.recommender.candidates`
(the scoring generator) with those same features.  :mod:`lakeloop_apps.recommender.reference` keeps
the hand-written feature code the declarative path replaced: the tests prove both give equal gold
tables and equal scoring features.  :mod:`lakeloop_apps.recommender.model` holds the ranker's
feature list and user-level holdout split that tests and benchmarks use.
"""
