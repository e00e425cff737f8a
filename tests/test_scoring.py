"""tfcxr.scoring.no_finding_score."""

import numpy as np
import pytest
import tensorflow as tf

from tfcxr.scoring import no_finding_score


def test_max_and_prod_on_numpy_and_tensors():
    probs = np.array([[0.1, 0.2, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(no_finding_score(probs), [0.5, 1.0])
    np.testing.assert_allclose(no_finding_score(probs, "prod"), [0.9 * 0.8 * 0.5, 1.0], rtol=1e-6)
    assert isinstance(no_finding_score(probs), np.ndarray)
    tensor = no_finding_score(tf.constant(probs), "prod")
    assert tf.is_tensor(tensor) and tensor.shape == (2,)
    traced = tf.function(lambda p: no_finding_score(p, "max"))(tf.constant(probs))
    np.testing.assert_allclose(traced.numpy(), [0.5, 1.0])


def test_bad_method_and_shape():
    with pytest.raises(ValueError, match="Received: method='min'"):
        no_finding_score(np.zeros((1, 5)), "min")
    with pytest.raises(ValueError, match="shape"):
        no_finding_score(np.zeros(5))
