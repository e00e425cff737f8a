"""No Finding score derived from the five target probabilities (NIH's "No Finding" is not a model output)."""

import tensorflow as tf

NO_FINDING_METHODS = ("max", "prod")


def no_finding_score(probs, method="max"):
    """Score for NIH's "No Finding" label from target probabilities.

    Args:
        probs: (batch, 5) probabilities in [0, 1], numpy or tensor.
        method: `"max"`: 1 - max_k p_k (default); `"prod"`: prod_k (1 - p_k).

    Returns:
        (batch,) scores in [0, 1]: a tensor for tensor input, numpy otherwise.
    """
    if method not in NO_FINDING_METHODS:
        raise ValueError(f"`method` must be one of {NO_FINDING_METHODS}. Received: method={method!r}")
    is_tensor = tf.is_tensor(probs)
    p = tf.convert_to_tensor(probs)
    if not p.dtype.is_floating:
        p = tf.cast(p, tf.float32)
    if p.shape.rank != 2:
        raise ValueError(f"`probs` must have shape (batch, classes). Received: shape={p.shape}")
    if method == "max":
        score = 1.0 - tf.reduce_max(p, axis=-1)
    else:
        score = tf.reduce_prod(1.0 - p, axis=-1)
    return score if is_tensor else score.numpy()
