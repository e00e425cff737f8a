"""SimSiam (Chen & He, "Exploring simple Siamese representation learning", CVPR 2021): the model and its loss.

Two random views of one X-ray (`tfcxr.pretrain_views`) pass through the same encoder
(backbone + projection MLP); a small predictor MLP maps one view's projection onto the
other's, which is held fixed (stop-gradient), and the loss is their negative cosine
similarity, symmetrised. It suits CNN backbones on a 2-core CPU and no reachable pretrained weights:
- no negatives, so small batches (16-64) work, unlike SimCLR/MoCo's contrastive losses;
- no momentum encoder (BYOL) and no queue (MoCo): one set of weights, two forward passes
  per step, so the cost is about twice a supervised step;
- it needs no decoder or sparse convolutions, which masked image modelling (MAE, SPCXR's
  group masking) needs before it fits a CNN, and every backbone of `tfcxr.models` works as is.
The collapse SimSiam can fall into is watched: `z_std` (the per-dimension standard deviation
of the l2-normalised projections times sqrt(dim)) is logged every epoch; about 1 is healthy,
0 is collapse.
"""

from tfcxr.models.presets import get_preset

METHOD = "simsiam"


def _simsiam_module():
    import keras
    import tensorflow as tf

    def negative_cosine(p, z):
        """-cos(p, stop_gradient(z)), mean over the batch; p, z: (batch, dim)."""
        p = tf.math.l2_normalize(tf.cast(p, tf.float32), axis=1)
        z = tf.math.l2_normalize(tf.stop_gradient(tf.cast(z, tf.float32)), axis=1)
        return -tf.reduce_mean(tf.reduce_sum(p * z, axis=1))

    def collapse_std(z):
        """Mean per-dimension std of the l2-normalised projections times sqrt(dim): ~1 healthy, 0 collapsed."""
        z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
        return tf.reduce_mean(tf.math.reduce_std(z, axis=0)) * tf.sqrt(tf.cast(tf.shape(z)[1], tf.float32))

    class SimSiam(keras.Model):
        """Encoder (preprocessor + backbone + projector) and predictor, trained with `fit` on view pairs.

        Call: images (batch, S, S, 1) float32 in [0, 1] -> projections (batch, projection_dim).
        `fit` data: (view1, view2), both (batch, S, S, 1); logs loss (in [-1, 1]) and z_std.
        """

        def __init__(self, encoder, projector, predictor, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.projector = projector
            self.predictor = predictor
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.std_tracker = keras.metrics.Mean(name="z_std")

        @property
        def metrics(self):
            return [self.loss_tracker, self.std_tracker]

        def call(self, images, training=False):
            return self.projector(self.encoder(images, training=training), training=training)

        def train_step(self, data):
            view1, view2 = data
            with tf.GradientTape() as tape:
                z1, z2 = self(view1, training=True), self(view2, training=True)  # (batch, projection_dim)
                p1, p2 = self.predictor(z1, training=True), self.predictor(z2, training=True)
                loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
                scaled = self.optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, self.trainable_variables)
            self.optimizer.apply(gradients, self.trainable_variables)
            self.loss_tracker.update_state(loss)
            self.std_tracker.update_state(collapse_std(z1))
            return {m.name: m.result() for m in self.metrics}

    return SimSiam


def build_simsiam(config):
    """SimSiam model for `config.backbone`; returns (model, backbone) where backbone is the `build_backbone` model."""
    import keras

    from tfcxr.models import CxrPreprocessor, build_backbone

    preset = get_preset(config.backbone)
    size, proj, pred = int(config.image_size), int(config.projection_dim), int(config.predictor_dim)
    backbone = build_backbone(config.backbone, size, None)
    inputs = keras.Input((size, size, 1), name="image", dtype="float32")
    x = CxrPreprocessor(preset["preprocessing"], preset["channels"], name="preprocessor")(inputs)
    encoder = keras.Model(inputs, backbone(x), name="encoder")  # (batch, features)

    features = keras.Input((encoder.output_shape[-1],), name="features")
    h = features
    for index in range(2):
        h = keras.layers.Dense(proj, use_bias=False, name=f"projector_dense{index}")(h)
        h = keras.layers.BatchNormalization(name=f"projector_bn{index}")(h)
        h = keras.layers.ReLU(name=f"projector_relu{index}")(h)
    h = keras.layers.Dense(proj, use_bias=False, name="projector_dense2")(h)
    z = keras.layers.BatchNormalization(name="projector_bn2")(h)  # (batch, projection_dim)
    projector = keras.Model(features, z, name="projector")

    z_in = keras.Input((proj,), name="projection")
    h = keras.layers.Dense(pred, use_bias=False, name="predictor_dense0")(z_in)
    h = keras.layers.BatchNormalization(name="predictor_bn0")(h)
    h = keras.layers.ReLU(name="predictor_relu0")(h)
    p = keras.layers.Dense(proj, dtype="float32", name="predictor_dense1")(h)  # (batch, projection_dim)
    predictor = keras.Model(z_in, p, name="predictor")

    model = _simsiam_module()(encoder, projector, predictor, name=f"simsiam_{config.backbone}")
    model(keras.ops.zeros((1, size, size, 1)))  # build every variable before BackupAndRestore loads them
    return model, backbone
