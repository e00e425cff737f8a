"""Is this a frontal chest X-ray? A small learned gate on the segmenter's own image embedding.

The LiteMedSAM image embedding (N, 256, 64, 64) is average-pooled to a 4 x 4 grid (4,096 features that keep the
layout: heart on the image right, lungs on both sides, the neck at the top). The features are standardised,
projected on the leading principal components of *real* CXRs, and scored by a logistic regression on those
components plus two one-class distances: the Mahalanobis distance inside the components and the residual outside
them. The regression learns real CXRs against rotated, flipped, inverted and cropped CXRs, noise, blank images and
photos; the distances catch inputs unlike anything seen in training.

``CxrGate.score_tf(embeddings) -> (N,)`` probability that each image is a frontal CXR; below ``threshold`` the QC
flag ``not_cxr`` is raised. Everything in ``score_tf`` is plain TF, so the gate also runs in the serving graph.
The gate is fitted for one image encoder and is saved beside it (``gate.npz``, its sha256 in ``segmenter.json``).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

GRID = 4  # pooled embedding grid side
GATE_FILENAME = "gate.npz"
_FIELDS = ("mean", "scale", "components", "component_scale", "residual_mean", "weights", "bias", "threshold")


@dataclasses.dataclass
class CxrGate:
    """A fitted gate; every field is a float32 array.

    Attributes:
        mean, scale: (F,) feature standardisation (F = 256 * GRID * GRID).
        components: (F, K) principal axes of standardised real-CXR features.
        component_scale: (K,) standard deviation of real CXRs along each axis.
        residual_mean: () mean squared residual of real CXRs outside the K axes (per feature).
        weights: (K + 2,) logistic-regression weights over [whitened components, log Mahalanobis, log residual].
        bias: () logistic-regression bias.
        threshold: () scores below it are ``not_cxr``.
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    component_scale: np.ndarray
    residual_mean: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    threshold: np.ndarray

    def __post_init__(self):
        for name in _FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), np.float32))
        features, k = self.components.shape
        expected = {"mean": (features,), "scale": (features,), "component_scale": (k,), "residual_mean": (),
                    "weights": (k + 2,), "bias": (), "threshold": ()}
        wrong = {n: getattr(self, n).shape for n, shape in expected.items() if getattr(self, n).shape != shape}
        if wrong or not all(np.all(np.isfinite(getattr(self, n))) for n in _FIELDS):
            raise ValueError(f"gate arrays are inconsistent or not finite: shapes {wrong}")

    # ------------------------------------------------------------------------------------------------------------
    def inputs_tf(self, features):
        """features float32 (N, F) -> logistic-regression inputs (N, K + 2)."""
        import tensorflow as tf

        z = (features - self.mean) / self.scale  # (N, F)
        projected = tf.matmul(z, self.components)  # (N, K)
        whitened = projected / self.component_scale
        residual = tf.reduce_mean(tf.square(z - tf.matmul(projected, self.components, transpose_b=True)), axis=-1)
        mahalanobis = tf.math.log1p(tf.reduce_mean(tf.square(whitened), axis=-1))  # (N,)
        residual = tf.math.log1p(residual / self.residual_mean)  # (N,)
        return tf.concat([whitened, mahalanobis[:, None], residual[:, None]], axis=-1)

    def score_tf(self, embeddings):
        """image embeddings float32 (N, 256, 64, 64) -> tf.float32 (N,) in [0, 1]: probability of a frontal CXR."""
        import tensorflow as tf

        logits = tf.linalg.matvec(self.inputs_tf(pooled_features(embeddings)), self.weights) + self.bias
        return tf.sigmoid(logits)

    def score(self, embeddings) -> np.ndarray:
        """``score_tf`` as numpy: float32 (N,) in [0, 1]."""
        return np.asarray(self.score_tf(np.asarray(embeddings, np.float32)))

    def score_features(self, features) -> np.ndarray:
        """Scores of already pooled features (N, F) -> float32 (N,) in [0, 1]."""
        import tensorflow as tf

        logits = tf.linalg.matvec(self.inputs_tf(tf.constant(features, tf.float32)), self.weights) + self.bias
        return np.asarray(tf.sigmoid(logits))

    # ------------------------------------------------------------------------------------------------------------
    def save(self, path) -> pathlib.Path:
        """Write the arrays to an ``.npz`` (no pickle), atomically; principal axes that are float16 values (see
        :func:`fit_gate`) are stored as float16, losslessly. ``load`` reads every array back as float32."""
        from .weights import save_npz_atomic

        arrays = {name: getattr(self, name) for name in _FIELDS}
        half = arrays["components"].astype(np.float16)
        if np.array_equal(half.astype(np.float32), arrays["components"]):
            arrays["components"] = half
        save_npz_atomic(path, arrays)
        return pathlib.Path(path)

    @classmethod
    def load(cls, path) -> "CxrGate":
        """Read a gate ``.npz``; a missing field or inconsistent arrays are a ``WeightsError`` naming the file."""
        from .weights import WeightsError, load_npz

        arrays = load_npz(path)
        missing = sorted(set(_FIELDS) - set(arrays))
        if missing:
            raise WeightsError(f"{path}: not a gate file (missing {missing})")
        try:
            return cls(**{name: arrays[name] for name in _FIELDS})
        except ValueError as err:
            raise WeightsError(f"{path}: {err}") from err


def pooled_features(embeddings):
    """image embeddings float32 (N, C, H, W) -> tf.float32 (N, C * GRID * GRID): means over a GRID x GRID grid."""
    import tensorflow as tf

    x = tf.transpose(tf.convert_to_tensor(embeddings, tf.float32), (0, 2, 3, 1))  # (N, H, W, C)
    size = x.shape[1] // GRID if x.shape[1] is not None else tf.shape(x)[1] // GRID
    pooled = tf.nn.avg_pool2d(x, size, size, "VALID")  # (N, GRID, GRID, C)
    return tf.reshape(pooled, [tf.shape(x)[0], -1])


def fit_gate(real, other, components: int = 64, c: float = 1.0, seed: int = 0,
             components_dtype: str = "float32") -> CxrGate:
    """Fit a gate on pooled features of real frontal CXRs (N_real, F) and of other images (N_other, F).

    ``components_dtype="float16"`` rounds the principal axes (F, K), the bulk of the file, to float16 values before
    the regression is fitted, so the gate is stored at half the size with no difference from the gate it measured.
    The threshold starts at 0.5; set it from validation scores with :func:`threshold_for`.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    real, other = np.asarray(real, np.float64), np.asarray(other, np.float64)
    mean = real.mean(axis=0)
    scale = real.std(axis=0) + 1e-3
    z_real = (real - mean) / scale
    k = int(min(components, len(real) - 1, real.shape[1]))
    pca = PCA(n_components=k, random_state=seed).fit(z_real)
    axes = pca.components_.T.astype(components_dtype).astype(np.float64)  # (F, K)
    component_scale = np.sqrt(pca.explained_variance_) + 1e-6
    residual_mean = np.mean((z_real - z_real @ axes @ axes.T) ** 2) + 1e-12
    gate = CxrGate(mean, scale, axes, component_scale, residual_mean, np.zeros(k + 2), 0.0, 0.5)
    inputs = np.concatenate([gate_inputs(gate, real), gate_inputs(gate, other)])
    labels = np.concatenate([np.ones(len(real)), np.zeros(len(other))])
    regression = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(inputs, labels)
    gate.weights = regression.coef_[0].astype(np.float32)
    gate.bias = np.float32(regression.intercept_[0])
    return gate


def gate_inputs(gate: CxrGate, features) -> np.ndarray:
    """Numpy view of ``gate.inputs_tf`` for fitting: (N, F) -> (N, K + 2) float64."""
    return np.asarray(gate.inputs_tf(np.asarray(features, np.float32)), np.float64)


def threshold_for(real_scores, max_false_rejection: float) -> float:
    """The highest threshold that flags at most `max_false_rejection` of these real-CXR (validation) scores."""
    scores = np.sort(np.asarray(real_scores, np.float64))
    allowed = int(np.floor(max_false_rejection * len(scores)))
    return float(scores[allowed]) if allowed < len(scores) else float(scores[-1])
