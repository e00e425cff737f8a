"""The segmenter's training loss: Dice + BCE on the decoder's low-resolution logits (MedSAM recipe)."""


def segmentation_loss(logits, labels, dice_weight: float = 1.0, bce_weight: float = 1.0):
    """Dice + BCE on logits.

    Args:
        logits: float32 (batch, boxes, h, w).
        labels: float32 (batch, boxes, h, w) in {0, 1}.

    Returns:
        scalar float32: ``dice_weight * (1 - soft Dice) + bce_weight * BCE``, averaged over boxes.
    """
    import tensorflow as tf

    labels = tf.cast(labels, tf.float32)
    probs = tf.sigmoid(logits)
    inter = tf.reduce_sum(probs * labels, axis=[-2, -1])
    total = tf.reduce_sum(probs, axis=[-2, -1]) + tf.reduce_sum(labels, axis=[-2, -1])
    dice_loss = 1.0 - tf.reduce_mean((2.0 * inter + 1.0) / (total + 1.0))
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
    return dice_weight * dice_loss + bce_weight * bce
