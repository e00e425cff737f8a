"""cxr_lung_masks: chest X-ray / lung mask pairs from Montgomery, Shenzhen, JSRT-style or generic folders.

Build from the command line (manual download, see MANUAL_DOWNLOAD_INSTRUCTIONS):

    tfds build datasets/cxr_lung_masks --manual_dir /data/lungs --data_dir ~/tensorflow_datasets

or from Python after `import tfcxr.datasets` (which registers this builder):

    tfds.load("cxr_lung_masks", split="train", download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir="/data/lungs")})

Pairs are discovered by `tfcxr.data.pairs.find_pairs` (the same code that
segmentation fine-tuning uses on a plain folder), so the layouts match exactly.
"""

import hashlib
import logging

import numpy as np
import tensorflow_datasets as tfds

from tfcxr.data import pairs as cxr_pairs

logger = logging.getLogger(__name__)

TEST_FRACTION = 0.2
SPLIT_SALT = "cxr_lung_masks-v1"


def split_of(image_id, test_fraction=TEST_FRACTION, salt=SPLIT_SALT):
    """'train' or 'test' for an image id (file stem), from a salted SHA-256 hash.

    Stable across machines, file order and dataset growth: adding images never
    moves an existing image to the other split. An image with the same stem in
    two source folders lands in the same split.
    """
    digest = hashlib.sha256(f"{salt}:{image_id}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    return "test" if unit < test_fraction else "train"


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for lung image/mask pairs (segmentation fine-tuning and Dice evaluation)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Montgomery, Shenzhen/JSRT-style and generic layouts; hashed 80/20 split."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put one or more lung segmentation sets in the manual dir, either directly or one
folder per set (e.g. <manual_dir>/MontgomerySet/, <manual_dir>/shenzhen/):

- Montgomery County set (NLM, https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets):
  extract MontgomerySet/ as is (CXR_png/ + ManualMask/leftMask, ManualMask/rightMask).
- Shenzhen set with the manual lung masks (Stirenko et al. 2018; e.g. Kaggle
  "Chest X-ray masks and labels"): images in images/ or CXR_png/, masks in masks/ or mask/ named <stem>_mask.png.
- JSRT/SCR or any other set: images/<stem>.png and masks/<stem>.png (0/255 union of both
  lungs; convert SCR's per-lung masks to one PNG first).

{cxr_pairs.EXPECTED_LAYOUTS}
"""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                        doc="8-bit grayscale chest X-ray (16-bit or RGB sources are converted).",
                    ),
                    "mask": tfds.features.Image(
                        shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                        doc="Lung mask, same height and width as `image`: 1 inside either lung, 0 elsewhere "
                        "(Montgomery's left and right masks merged).",
                    ),
                    "image_id": tfds.features.Text(doc="Image file stem, e.g. 'MCUCXR_0001_0'."),
                    "source": tfds.features.Text(doc="Layout the pair came from: montgomery, shenzhen or generic."),
                    "folder": tfds.features.Text(
                        doc="Folder of the set relative to the manual dir ('.' for the manual dir itself)."
                    ),
                }
            ),
            supervised_keys=("image", "mask"),
            homepage="https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        try:
            root = dl_manager.manual_dir
        except AssertionError as err:  # TFDS' own message for a missing or empty dir
            raise FileNotFoundError(f"{err}\n{cxr_pairs.EXPECTED_LAYOUTS}") from err
        found = cxr_pairs.find_pairs(root)  # FileNotFoundError with the expected trees when empty
        by_split = {"train": [], "test": []}
        for pair in found:
            by_split[split_of(pair.stem)].append(pair)
        logger.info(
            "%d pairs in %s: %d train, %d test", len(found), root, len(by_split["train"]), len(by_split["test"])
        )
        for name in [name for name, items in by_split.items() if not items]:
            logger.warning("%s: no pair hashes to the %r split; it is left out (tiny set)", root, name)
            del by_split[name]  # TFDS cannot write an empty split
        return {name: self._generate_examples(root, items) for name, items in by_split.items()}

    def _generate_examples(self, root, items):
        for pair in items:
            image, mask = cxr_pairs.read_pair(pair)  # ImageReadError names the file (e.g. size mismatch)
            folder = pair.image_path.parent.relative_to(root).parent  # the set: images/ or CXR_png/'s parent
            yield f"{folder.as_posix()}/{pair.stem}", {
                "image": np.round(image * 255.0).astype(np.uint8),
                "mask": mask[..., None].astype(np.uint8),
                "image_id": pair.stem,
                "source": pair.source_layout,
                "folder": folder.as_posix(),
            }
