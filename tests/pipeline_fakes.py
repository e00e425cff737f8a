"""A tiny synthetic NIH-layout set and `PipelineConfig`s on it, for the tests of tfcxr.data.pipeline and records."""

from tfcxr.data.pipeline import PipelineConfig
from tfcxr.data.synthetic import SyntheticConfig, generate


def synthetic_set(folder):
    """48 synthetic 64-px images with lung masks (`folder/masks`) in the NIH layout; returns `folder`."""
    return generate(folder, SyntheticConfig(num_images=48, image_size=64, seed=3))


def pipeline_config(synthetic, **kwargs):
    """`PipelineConfig` on `synthetic` at S=32, batch 8, with its mask folder unless `masks` is given."""
    kwargs.setdefault("masks", str(synthetic / "masks"))
    return PipelineConfig(data=str(synthetic), image_size=32, batch_size=8, **kwargs)
