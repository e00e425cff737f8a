"""TFDS DatasetBuilderTestCase for nih_cxr14 on the committed dummy_data/ (official lists present).

Run with `pytest datasets/nih_cxr14` (tests/test_tfds_nih.py also collects it).
The dummy manual dir is written by make_dummy_data.py: 18 CSV rows, one
Cardiomegaly-only row (not curated) and one missing file leave 16 examples;
test = patients 10-12 from test_list.txt.
"""

import tensorflow_datasets as tfds

import tfcxr.datasets


class NihCxr14Test(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = tfcxr.datasets.register("nih_cxr14")
    SPLITS = {"train": 8, "validation": 4, "test": 4}
    SKIP_CHECKSUMS = True  # manual download: no URLs


if __name__ == "__main__":
    tfds.testing.test_main()
