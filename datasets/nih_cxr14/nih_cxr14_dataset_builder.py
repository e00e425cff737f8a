"""nih_cxr14: the curated 5-target subset of NIH ChestX-ray14 with patient-level splits.

Build from the command line (manual download, see MANUAL_DOWNLOAD_INSTRUCTIONS):

    tfds build datasets/nih_cxr14 --manual_dir /data/nih --data_dir ~/tensorflow_datasets

or from Python after `import tfcxr.datasets` (which registers this builder):

    tfds.load("nih_cxr14", split="train", download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir="/data/nih")})
"""

import logging

import cv2
import numpy as np
import tensorflow_datasets as tfds

from tfcxr.data import io as cxr_io
from tfcxr.data import nih
from tfcxr.labels import NO_FINDING, TARGETS

logger = logging.getLogger(__name__)

# First found wins. `labels.csv` is the layout of tfcxr's real-image sample (shared/data/nih_cxr14_384).
METADATA_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv", "labels.csv")

EXPECTED_TREE = """\
<manual_dir>/
├── Data_Entry_2017_v2020.csv   (or Data_Entry_2017_v2020.csv.gz, Data_Entry_2017.csv, labels.csv)
├── train_val_list.txt          (optional, with test_list.txt: NIH's official split)
├── test_list.txt               (optional)
└── images/00000001_000.png ... (all PNGs in one folder, as NIH's images_0XX.tar.gz extract)
    or images_001/images/*.png ... images_012/images/*.png (Kaggle's layout)"""


def _encode_png(image):
    """float32 (H, W, 1) in [0, 1] -> PNG bytes of the uint8 (H, W) image."""
    ok, encoded = cv2.imencode(".png", np.round(image[..., 0] * 255.0).astype(np.uint8))
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def _is_gray8_png(data):
    """True for an 8-bit grayscale PNG (IHDR bit depth 8, colour type 0): stored as is."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[24] == 8 and data[25] == 0


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for the curated NIH ChestX-ray14 subset (DESIGN §5)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Curated subset (No Finding or >= 1 target), all views, patient-level splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download NIH ChestX-ray14 from https://nihcc.app.box.com/v/ChestXray-NIHCC
(or Kaggle's `nih-chest-xrays/data`): the metadata CSV, the two split lists and
the twelve image archives images_001.tar.gz ... images_012.tar.gz, extracted.
Lay them out as:

{EXPECTED_TREE}

Then run `tfds build datasets/nih_cxr14 --manual_dir <manual_dir>`.
Images listed in the CSV but absent from the folders are skipped with a warning.
"""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                        doc="8-bit grayscale chest X-ray.",
                    ),
                    "labels": tfds.features.Tensor(
                        shape=(len(TARGETS),), dtype=np.float32,
                        doc=f"Multi-hot 0/1 targets in the order {TARGETS}.",
                    ),
                    "no_finding": tfds.features.Scalar(dtype=np.int32, doc="1 if NIH labels the image 'No Finding'."),
                    "patient_id": tfds.features.Text(doc="NIH Patient ID (no leading zeros)."),
                    "view": tfds.features.Text(doc="View Position: 'PA' or 'AP'."),
                    "age": tfds.features.Scalar(dtype=np.float32, doc="Patient age in years, -1 if unknown."),
                    "sex": tfds.features.Text(doc="'M' or 'F'."),
                    "image_id": tfds.features.Text(doc="NIH Image Index, e.g. '00000001_000.png'."),
                }
            ),
            supervised_keys=("image", "labels"),
            homepage="https://nihcc.app.box.com/v/ChestXray-NIHCC",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        try:
            root = dl_manager.manual_dir
        except AssertionError as err:  # TFDS' own message for a missing or empty dir
            raise FileNotFoundError(f"{err}\nExpected layout:\n{EXPECTED_TREE}") from err
        metadata = next((root / name for name in METADATA_NAMES if (root / name).is_file()), None)
        images = nih.find_images(root)
        if metadata is None or not images:
            problem = "no metadata CSV" if metadata is None else "no image files"
            raise FileNotFoundError(f"{root}: {problem} found. Expected layout:\n{EXPECTED_TREE}")
        meta = nih.load_metadata(metadata)
        present = meta["image_id"].isin(images)
        if not present.all():
            logger.warning(
                "%d of %d images in %s are missing under %s; building from the %d present",
                (~present).sum(), len(meta), metadata.name, root, present.sum(),
            )
        meta = meta[present].reset_index(drop=True)
        meta.attrs["source"] = str(metadata)  # official lists are looked up beside it
        curated = nih.curate(meta, nih.CurationConfig(views=None))
        return {
            split: self._generate_examples(curated[curated["split"] == split], images)
            for split in nih.SPLITS
        }

    def _generate_examples(self, rows, images):
        rejected = 0
        for row in rows.to_dict("records"):
            path = images[row["image_id"]]
            try:
                image = cxr_io.read_image(path)  # validates the file; float32 (H, W, 1)
            except cxr_io.ImageReadError as err:
                rejected += 1
                logger.warning("Skipping %s", err)
                continue
            data = path.read_bytes()
            if not _is_gray8_png(data):  # 16-bit or RGB(A): store the converted 8-bit gray image
                data = _encode_png(image)
            age = row["age"]
            yield row["image_id"], {
                "image": data,
                "labels": np.array([row[target] for target in TARGETS], np.float32),
                "no_finding": int(row[NO_FINDING]),
                "patient_id": row["patient_id"],
                "view": row["view"],
                "age": np.float32(-1.0 if np.isnan(age) else age),
                "sex": row["sex"],
                "image_id": row["image_id"],
            }
        if rejected:
            logger.warning("Skipped %d unreadable images", rejected)
