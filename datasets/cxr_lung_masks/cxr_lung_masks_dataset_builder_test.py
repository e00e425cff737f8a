"""TFDS DatasetBuilderTestCase for cxr_lung_masks on the committed dummy_data/ (all three layouts).

Run with `pytest datasets/cxr_lung_masks` (tests/test_tfds_lung_masks.py also collects it).
dummy_data/ is written by make_dummy_data.py: 4 Montgomery, 4 Shenzhen and 4 generic pairs plus one
image without a mask (skipped); the hashed split puts 2 of the 12 pairs in test.
"""

import tensorflow_datasets as tfds

import tfcxr.datasets


class CxrLungMasksTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = tfcxr.datasets.register("cxr_lung_masks")
    SPLITS = {"train": 10, "test": 2}
    SKIP_CHECKSUMS = True  # manual download: no URLs


if __name__ == "__main__":
    tfds.testing.test_main()
