"""The built-in recommender app.

Its feature sets and training set are conf files (``conf/features/*.yaml``,
``conf/training_sets/training_set.yaml``) computed by :mod:`lakeloop.featuresets`.
:mod:`lakeloop_apps.recommender.reference` keeps the hand-written feature code the declarative
path replaced: the tests prove both give equal gold tables, and bulk inference still scores
candidate pairs with its ``training_set`` until scoring is declared in conf too.
"""
