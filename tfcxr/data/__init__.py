"""Data: NIH ChestX-ray14 curation and splits, lung pairs, the tf.data pipeline, TFDS sources, the synthetic demo."""
