"""The shipped segmenter preset (tfcxr/segment/presets/litemedsam-lungs): offline load, checksums, stability."""

import json
import shutil

import cv2
import numpy as np
import pytest

from tfcxr.segment import presets
from tfcxr.segment.prompts import InferenceSettings

PRESET = presets.DEFAULT_PRESET
PHANTOM_MASK = __import__("pathlib").Path(__file__).parent / "data" / "litemedsam_lungs_phantom_mask.png"
CLASSIC_PHANTOM_MASK = PHANTOM_MASK.with_name("litemedsam_lungs_classic_phantom_mask.png")


def phantom():
    """One seeded synthetic radiograph (float32 (256, 256, 1) in [0, 1]) and its exact lung mask."""
    from tfcxr.data.synthetic import SyntheticConfig, generate_arrays

    images, masks, _, _ = generate_arrays(SyntheticConfig(num_images=1, image_size=256, seed=11, tube_rate=0.0))
    return images[0][..., None].astype(np.float32) / 255.0, masks[0]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    from tfcxr.segment import load_segmenter

    with pytest.MonkeyPatch.context() as patch:  # no hub, no converted-weights cache: the package alone
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TFCXR_CACHE", str(tmp_path_factory.mktemp("empty_cache")))
        return load_segmenter()


def test_preset_ships_in_the_package_with_checksums_and_card():
    from tfcxr.segment.weights import sha256_file

    directory = presets.packaged_presets()[PRESET]
    meta = json.loads((directory / "segmenter.json").read_text())
    weights = directory / meta["weights"]["file"]
    assert meta["weights"]["dtype"] == "float16" and weights.stat().st_size <= 25 * 2**20
    assert sha256_file(weights) == meta["weights"]["sha256"]
    assert sha256_file(directory / meta["gate"]["file"]) == meta["gate"]["sha256"]
    assert meta["mask_definition"]["name"] and meta["inference"]["prompt"] in ("prior", "refine")
    card = (directory / "MODEL_CARD.md").read_text()
    assert f"# Model card: `{PRESET}`" in card and "Licences" in card
    assert PRESET in presets.available_presets() and "litemedsam" in presets.available_presets()
    import tfcxr.segment

    assert tfcxr.segment.available_presets() == presets.available_presets()  # the lazy package attribute


def test_default_preset_loads_offline_with_its_own_settings(preset):
    meta = json.loads((presets.packaged_presets()[PRESET] / "segmenter.json").read_text())
    assert preset.name == PRESET and preset.gate is not None
    assert preset.inference == InferenceSettings.from_dict(meta["inference"])
    np.testing.assert_allclose(preset.priors, meta["priors"], atol=1e-6)


def test_preset_output_on_a_phantom_is_stable(preset):
    image, truth = phantom()
    mask = preset.predict([image])[0]
    expected = cv2.imread(str(PHANTOM_MASK), cv2.IMREAD_GRAYSCALE) > 127
    overlap = 2 * np.logical_and(mask, expected).sum() / (mask.sum() + expected.sum())
    assert overlap >= 0.99, f"preset output drifted from the stored phantom mask (Dice {overlap:.4f})"
    to_truth = 2 * np.logical_and(mask, truth).sum() / (mask.sum() + truth.sum())
    assert to_truth >= 0.8, f"preset mask no longer matches the phantom's lungs (Dice {to_truth:.4f})"


def test_corrupted_preset_files_give_clear_errors(tmp_path):
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.weights import WeightsError

    copy = tmp_path / PRESET
    shutil.copytree(presets.packaged_presets()[PRESET], copy)
    weights = copy / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[len(data) // 3] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"litemedsam-lungs/weights\.npz: sha256 mismatch"):
        load_segmenter(str(copy))
    shutil.copyfile(presets.packaged_presets()[PRESET] / "weights.npz", weights)
    (copy / "gate.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(WeightsError, match=r"gate\.npz: sha256 mismatch"):
        load_segmenter(str(copy))
    with pytest.raises(ValueError, match="Unknown segmenter preset 'litemedsam-lungz'.*litemedsam-lungs"):
        load_segmenter("litemedsam-lungz")


def test_the_preset_is_the_default_everywhere():
    from tfcxr.export.__main__ import build_parser as export_parser
    from tfcxr.segment import evaluate, predict
    from tfcxr.segment.loading import load_segmenter

    assert load_segmenter.__defaults__[0] == PRESET
    assert predict.build_parser().parse_args(["--images", "a", "--out", "b"]).model == PRESET
    assert evaluate.build_parser().parse_args(["--data", "a", "--out", "b"]).model == PRESET
    assert export_parser().parse_args(["run", "--format", "savedmodel", "--out", "o"]).segmenter == PRESET


def test_noise_and_photos_are_flagged_not_cxr_by_the_preset(preset, tmp_path):
    """The attack from the hardening issue: 16-bit uniform noise used to get a clean-looking lung mask."""
    from tfcxr.segment import predict, qc
    from tfcxr.segment.gate_data import photos

    images = tmp_path / "images"
    images.mkdir()
    noise = np.random.default_rng(0).integers(0, 65536, (400, 400), dtype=np.uint16)
    cv2.imwrite(str(images / "noise16.png"), noise)
    cv2.imwrite(str(images / "camera.png"), (photos()["camera"][..., 0] * 255).astype(np.uint8))
    image, _ = phantom()
    cv2.imwrite(str(images / "phantom.png"), (image[..., 0] * 255).astype(np.uint8))
    counts = predict.generate_masks(preset, str(images), tmp_path / "masks", batch_size=4)
    table = qc.read_qc(tmp_path / "masks").set_index("stem")
    assert "not_cxr" in table.loc["noise16", "flags"] and "not_cxr" in table.loc["camera", "flags"]
    assert counts["not_cxr"] >= 2 and float(table.loc["noise16", "cxr_score"]) < float(preset.gate.threshold)


def test_the_classic_variant_ships_its_checked_head_and_its_phantom_output_is_stable(preset):
    from tfcxr.segment import load_segmenter
    from tfcxr.segment.weights import sha256_file

    directory = presets.packaged_presets()[PRESET]
    meta = json.loads((directory / "segmenter.json").read_text())
    entry = meta["heads"]["classic"]
    assert entry["dtype"] == "float16" and sha256_file(directory / entry["file"]) == entry["sha256"]
    assert meta["variants"][f"{PRESET}-classic"]["inference"] == {"definition": "classic"}
    variant = load_segmenter(f"{PRESET}-classic")
    assert variant.inference == preset.inference.replace(definition="classic")
    image, truth = phantom()
    own, classic = preset.predict([image])[0], variant.predict([image])[0]
    assert own.shape == classic.shape and not np.array_equal(own, classic)
    expected = cv2.imread(str(CLASSIC_PHANTOM_MASK), cv2.IMREAD_GRAYSCALE) > 127
    overlap = 2 * np.logical_and(classic, expected).sum() / (classic.sum() + expected.sum())
    assert overlap >= 0.99, f"classic output drifted from the stored phantom mask (Dice {overlap:.4f})"
    to_truth = 2 * np.logical_and(classic, truth).sum() / (classic.sum() + truth.sum())
    assert to_truth >= 0.8, f"classic mask no longer matches the phantom's lungs (Dice {to_truth:.4f})"
