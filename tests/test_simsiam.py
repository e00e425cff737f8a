"""tfcxr.simsiam: the model's parts and shapes, and one training step's logs."""

import numpy as np

from tfcxr.pretrain import PretrainConfig
from tfcxr.simsiam import build_simsiam

SIZE = 32


def test_build_simsiam_shapes_and_one_step_logs_loss_and_z_std():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    config = PretrainConfig(images=("x",), backbone="tiny", image_size=SIZE, projection_dim=16, predictor_dim=4)
    model, backbone = build_simsiam(config)
    assert model.name == "simsiam_tiny" and backbone.name == "tiny_backbone"
    images = np.random.default_rng(0).uniform(0, 1, (4, SIZE, SIZE, 1)).astype(np.float32)
    assert tuple(model(images).shape) == (4, 16)
    assert tuple(model.predictor(model(images)).shape) == (4, 16)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    pairs = tf.data.Dataset.from_tensors((images, images[:, ::-1]))  # one batch of (view1, view2), as make_dataset
    logs = model.fit(pairs, epochs=1, verbose=0, shuffle=False).history
    assert set(logs) == {"loss", "z_std"}
    assert -1 <= logs["loss"][0] <= 1 and logs["z_std"][0] > 0
