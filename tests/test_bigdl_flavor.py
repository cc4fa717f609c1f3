"""The ``bigdl`` flavour's pyfunc (numpy forward pass of a saved network) and the backend's pure helpers;
no BigDL needed.  That the pyfunc equals BigDL's own predictions is checked in tests/test_bigdl.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lakeloop.train import tasks
from lakeloop.train.bigdl import epoch_means
from lakeloop.train.bigdl_flavor import NetworkScorer, forward


def test_forward_is_dense_layers_with_weights_out_by_in():
    w0, b0 = np.array([[1.0, -1.0], [0.5, 0.5]]), np.array([0.0, -1.0])
    w1, b1 = np.array([[2.0, -3.0]]), np.array([0.5])
    x = np.array([[1.0, 2.0], [3.0, 1.0]])
    hidden = np.maximum(x @ w0.T + b0, 0)  # [[0, 0.5], [2, 1]]
    want = 1 / (1 + np.exp(-(hidden @ w1.T + b1)))
    np.testing.assert_allclose(forward(x, [w0, b0, w1, b1], ["relu", "sigmoid"]), want)
    with pytest.raises(ValueError, match="4 weight arrays for 1 dense layers"):
        forward(x, [w0, b0, w1, b1], ["relu"])


def saved_network(folder, activations=("sigmoid",), **task):
    folder.mkdir()
    spec = {"features": ["a", "b"], "means": [10.0, -1.0], "stds": [2.0, 4.0], "activations": list(activations),
            **task}
    (folder / "network.json").write_text(json.dumps(spec))
    np.savez(folder / "weights.npz", np.array([[1.0, 2.0]]), np.array([0.0]))
    return folder


def test_scorer_standardises_and_imputes_missing_values_with_the_mean(tmp_path):
    scorer = NetworkScorer(saved_network(tmp_path / "net"))
    frame = pd.DataFrame({"b": [3.0, np.nan, None], "a": [12.0, 10.0, np.nan], "extra": [1, 2, 3]})
    # standardised: (1, 1), (0, 0 imputed), (0 imputed, 0 imputed); logit = z_a + 2 z_b
    np.testing.assert_allclose(scorer.predict(frame), 1 / (1 + np.exp(-np.array([3.0, 0.0, 0.0]))))
    with pytest.raises(ValueError, match="lacks feature columns b"):
        scorer.predict(frame.drop(columns="b"))


def test_scorer_refuses_unknown_activations(tmp_path):
    with pytest.raises(ValueError, match="unknown activations"):
        NetworkScorer(saved_network(tmp_path / "net", ("swish",)))


def test_regression_scorer_undoes_the_target_standardisation(tmp_path):
    """A regression network's linear output is the standardised target: the pyfunc gives ``out * std + mean``."""
    scorer = NetworkScorer(saved_network(tmp_path / "net", ("linear",), task="regression", target=[50.0, 8.0]))
    frame = pd.DataFrame({"a": [12.0, 10.0], "b": [3.0, np.nan]})
    out = scorer.predict(frame)
    np.testing.assert_allclose(out, 50.0 + 8.0 * np.array([3.0, 0.0]))
    assert tasks.predictions("regression", out, 2).shape == (2,)


def test_epoch_means_split_iterations_at_the_validation_steps():
    records = [[1, 4.0, 0], [2, 2.0, 0], [3, 1.0, 0], [4, 3.0, 0], [5, 1.0, 0]]
    assert epoch_means(records, [2, 5]) == [3.0, 5.0 / 3]
