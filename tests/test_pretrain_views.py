"""tfcxr.pretrain_views: one random view (shape, range, stateless seeds) and the batched view pairs."""

import numpy as np
import pytest

from tfcxr.pretrain import PretrainConfig
from tfcxr.pretrain_views import load_image, make_dataset, random_view

SIZE = 32


@pytest.mark.parametrize("in_dataset", [False, True])
def test_random_view_shape_range_and_seeds(in_dataset):
    import tensorflow as tf

    config = PretrainConfig(images=("x",), image_size=SIZE, flip=True)
    image = tf.random.stateless_uniform((SIZE, SIZE, 1), (1, 2))

    def views(seed):
        if not in_dataset:
            return random_view(image, seed, config).numpy()
        ds = tf.data.Dataset.from_tensors(tf.constant(seed, tf.int64)).map(lambda s: random_view(image, s, config))
        return next(iter(ds)).numpy()

    a, b, c = views([3, 4]), views([3, 4]), views([5, 6])
    assert a.shape == (SIZE, SIZE, 1) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3


def test_load_image_masks_at_source_then_resizes(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), np.full((64, 64), 200, np.uint8))
    lungs = np.zeros((64, 64), np.uint8)
    lungs[:, :32] = 255
    cv2.imwrite(str(tmp_path / "x_mask.png"), lungs)
    config = PretrainConfig(images=("x",), image_size=SIZE, mask="tight", masks=str(tmp_path))
    image = load_image(str(tmp_path / "x.png"), str(tmp_path / "x_mask.png"), config).numpy()
    assert image.shape == (SIZE, SIZE, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[:, : SIZE // 2 - 1], 200 / 255, atol=1e-3)
    assert np.all(image[:, SIZE // 2 + 1 :] == 0)


def test_make_dataset_gives_full_batches_of_view_pairs(tmp_path):
    import cv2
    import pandas as pd

    paths = []
    for index in range(5):
        paths.append(str(tmp_path / f"{index}.png"))
        cv2.imwrite(paths[-1], np.random.default_rng(index).integers(0, 255, (40, 48), np.uint8))
    frame = pd.DataFrame({"image_path": paths, "mask_path": [""] * 5})
    config = PretrainConfig(images=("x",), image_size=SIZE, batch_size=2)
    batches = list(make_dataset(frame, config))
    assert len(batches) == 2  # 5 images, batch 2: the remainder is dropped
    for view1, view2 in batches:
        assert view1.shape == view2.shape == (2, SIZE, SIZE, 1)
        assert 0 <= float(np.min(view1)) and float(np.max(view1)) <= 1
        assert np.abs(view1.numpy() - view2.numpy()).mean() > 1e-3  # two different views of each image
