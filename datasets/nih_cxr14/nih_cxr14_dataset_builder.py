"""nih_cxr14: the curated 5-target subset of NIH ChestX-ray14 with patient-level splits.

Configs:
    full        the images as downloaded (8-bit gray PNG), the default.
    masked_512  prepared for training: each image resized to longest side 512 with its cleaned
                lung mask (`mask`, uint8 0/255, same size: holes filled at source resolution,
                then resized) and the mask's distance map (`lung_distance`, uint8: Euclidean
                distance in pixels to the nearest lung pixel, 0 on the lung, capped at 255; stored
                zlib-compressed, which decodes ~2x faster than a PNG of it), from which training
                takes every mask mode at any margin with one comparison. Built on Apache Beam when
                it is installed.
    masked_256  the same at longest side 256.
Every config has the same curated images and train/validation/test splits.

Build from the command line (manual download, see MANUAL_DOWNLOAD_INSTRUCTIONS):

    tfds build datasets/nih_cxr14 --manual_dir /data/nih --data_dir ~/tensorflow_datasets
    tfds build datasets/nih_cxr14 --config masked_512 --manual_dir /data/nih \\
        --beam_pipeline_options="runner=DirectRunner,direct_num_workers=8,direct_running_mode=multi_processing"

The masked configs read `<manual_dir>/masks/<image stem>.png` (0/255, any size; e.g. written by
`tfcxr.segment.predict`). Two options, as environment variables of the build (TFDS does not allow
a custom config under a registered config's name, so they are not `--config` JSON):

    TFCXR_NIH_MASKS_DIR=/data/nih_masks       mask folder, absolute or relative to the manual dir
    TFCXR_NIH_SKIP_MISSING_MASKS=1            leave out images without a mask instead of failing

A missing mask is an error naming the image unless skipping is on: then those images are left
out, logged, and counted in the dataset's metadata (`info.metadata["skipped_missing_masks"]`).
With the Python API, a `NihCxr14Config` of another name can set `masks_dir` and
`skip_missing_masks` directly.

or from Python after `import tfcxr.datasets` (which registers this builder):

    tfds.load("nih_cxr14", split="train", download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir="/data/nih")})
"""

import dataclasses
import functools
import importlib.util
import logging
from os import environ  # `os` itself is mocked by tfds.testing.DatasetBuilderTestCase
import pathlib

import cv2
import numpy as np
import tensorflow_datasets as tfds

from tfcxr.data import io as cxr_io
from tfcxr.data import nih, nih_metadata, nih_splits
from tfcxr.data.lung_distance import lung_distance
from tfcxr.labels import NO_FINDING, TARGETS

logger = logging.getLogger(__name__)

# First found wins. `labels.csv` is the layout of tfcxr's real-image sample (the nih_cxr14_384 sample, see docs/results.md).
METADATA_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv", "labels.csv")

MASKS_DIR_ENV = "TFCXR_NIH_MASKS_DIR"
SKIP_ENV = "TFCXR_NIH_SKIP_MISSING_MASKS"

EXPECTED_TREE = """\
<manual_dir>/
├── Data_Entry_2017_v2020.csv   (or Data_Entry_2017_v2020.csv.gz, Data_Entry_2017.csv, labels.csv)
├── train_val_list.txt          (optional, with test_list.txt: NIH's official split)
├── test_list.txt               (optional)
├── images/00000001_000.png ... (all PNGs in one folder, as NIH's images_0XX.tar.gz extract)
│   or images_001/images/*.png ... images_012/images/*.png (Kaggle's layout)
└── masks/00000001_000.png ...  (masked_* configs only: one lung mask per image, 0/255,
                                 named by the image's stem; or the config's `masks_dir`)"""


@dataclasses.dataclass
class NihCxr14Config(tfds.core.BuilderConfig):
    """A config of nih_cxr14.

    Attributes:
        image_size: longest side of the stored images and masks; None stores the images as they are
            (no masks).
        masks_dir: mask folder, absolute or relative to the manual dir (masked configs); the
            TFCXR_NIH_MASKS_DIR environment variable overrides it.
        skip_missing_masks: leave out (and count) images without a mask instead of failing; the
            TFCXR_NIH_SKIP_MISSING_MASKS environment variable (1/0) overrides it.
    """

    image_size: int | None = None
    masks_dir: str = "masks"
    skip_missing_masks: bool = False

    @property
    def prepared(self) -> bool:
        return self.image_size is not None


RELEASE_NOTES = {
    "1.0.0": "Curated subset (No Finding or >= 1 target), all views, patient-level splits.",
    "1.1.0": "masked_* configs: `lung_distance`, the stored mask's distance map (the `full` config is unchanged).",
}
MASKED_VERSION = "1.2.0"  # the masked configs' own version: `full` keeps the builder's, so its builds stay valid
MASKED_RELEASE_NOTES = {
    **RELEASE_NOTES,
    MASKED_VERSION: "`lung_distance` stored zlib-compressed instead of as a PNG (faster to decode).",
}


def _masked_config(size):
    return NihCxr14Config(
        name=f"masked_{size}", image_size=size, version=MASKED_VERSION, release_notes=MASKED_RELEASE_NOTES,
        description=f"Images resized to longest side {size} with their cleaned lung masks (same size, 0/255).",
    )


def resize_longest(array, size, interpolation=None):
    """uint8 or float32 (H, W) resized so that max(H, W) == size (aspect kept, sides rounded, >= 1)."""
    height, width = array.shape[:2]
    scale = size / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 order: (width, height)
    if interpolation is None:
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(array, target, interpolation=interpolation)


def clean_mask(mask):
    """bool (H, W) lung mask -> bool (H, W) with its holes filled (background not reaching the border)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def prepare_pair(image, mask, size):
    """The stored pair of a masked config.

    Args:
        image: float32 (H, W, 1) in [0, 1], the source image.
        mask: uint8 (h, w) lung mask, > 127 = lung (resized to the image when its size differs).
        size: longest side of the output.

    Returns:
        (image uint8 (H', W', 1), mask uint8 (H', W', 1) in {0, 255}, distance uint8 (H', W', 1)) with
        max(H', W') == size. The mask is hole-filled at source resolution, resized with area averaging and
        thresholded at 0.5; `distance` is that mask's `tfcxr.data.lung_distance.lung_distance`.
    """
    gray = np.round(image[..., 0] * 255.0).astype(np.uint8)  # (H, W)
    lung = mask > 127
    if lung.shape != gray.shape:
        lung = cv2.resize(lung.astype(np.uint8), gray.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    lung = clean_mask(lung).astype(np.float32)
    small = resize_longest(gray, size)  # (H', W')
    small_lung = resize_longest(lung, size, cv2.INTER_AREA if size < max(lung.shape) else cv2.INTER_LINEAR)
    small_lung = np.where(small_lung > 0.5, 255, 0).astype(np.uint8)
    return small[..., None], small_lung[..., None], lung_distance(small_lung > 0)[..., None]


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
    """DatasetBuilder for the curated NIH ChestX-ray14 subset (No Finding or at least one target; patient-level splits)."""

    VERSION = tfds.core.Version("1.1.0")  # of `full`; the masked configs carry MASKED_VERSION
    RELEASE_NOTES = RELEASE_NOTES
    BUILDER_CONFIGS = [
        NihCxr14Config(name="full", description="The curated images as downloaded (8-bit gray PNG)."),
        _masked_config(512),
        _masked_config(256),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download NIH ChestX-ray14 from https://nihcc.app.box.com/v/ChestXray-NIHCC
(or Kaggle's `nih-chest-xrays/data`): the metadata CSV, the two split lists and
the twelve image archives images_001.tar.gz ... images_012.tar.gz, extracted.
Lay them out as:

{EXPECTED_TREE}

Then run `tfds build datasets/nih_cxr14 --manual_dir <manual_dir>` (add `--config masked_512`
for the prepared images with their lung masks in `masks/`).
Images listed in the CSV but absent from the folders are skipped with a warning.
"""

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        extra = {}
        if config.prepared:
            extra["mask"] = tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                doc="Cleaned lung mask (both lungs, holes filled), 0/255, the size of `image`.",
            )
            extra["lung_distance"] = tfds.features.Tensor(
                shape=(None, None, 1), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB,
                doc="Euclidean distance in pixels of `image` from each pixel to the nearest lung pixel of `mask` "
                    "(0 on the lung), rounded and capped at 255.",
            )
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(None, None, 1), dtype=np.uint8, encoding_format="png",
                        doc="8-bit grayscale chest X-ray"
                        + (f", longest side {config.image_size}." if config.prepared else "."),
                    ),
                    **extra,
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
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        try:
            root = dl_manager.manual_dir
        except AssertionError as err:  # TFDS' own message for a missing or empty dir
            raise FileNotFoundError(f"{err}\nExpected layout:\n{EXPECTED_TREE}") from err
        metadata = next((root / name for name in METADATA_NAMES if (root / name).is_file()), None)
        images = nih_metadata.find_images(root)
        if metadata is None or not images:
            problem = "no metadata CSV" if metadata is None else "no image files"
            raise FileNotFoundError(f"{root}: {problem} found. Expected layout:\n{EXPECTED_TREE}")
        meta = nih_metadata.load_metadata(metadata)
        present = meta["image_id"].isin(images)
        if not present.all():
            logger.warning(
                "%d of %d images in %s are missing under %s; building from the %d present",
                (~present).sum(), len(meta), metadata.name, root, present.sum(),
            )
        meta = meta[present].reset_index(drop=True)
        meta.attrs["source"] = str(metadata)  # official lists are looked up beside it
        curated = nih.curate(meta, nih.CurationConfig(views=None))
        masks = None
        if self.builder_config.prepared:
            curated, masks = self._find_masks(root, curated)
        return {
            split: self._generate_examples(curated[curated["split"] == split], images, masks)
            for split in nih_splits.SPLITS
        }

    def _mask_options(self):
        """(masks_dir, skip_missing_masks): the config's, overridden by TFCXR_NIH_MASKS_DIR / _SKIP_MISSING_MASKS."""
        config = self.builder_config
        masks_dir = environ.get(MASKS_DIR_ENV) or config.masks_dir
        skip = environ.get(SKIP_ENV)
        if skip is None or skip == "":
            return masks_dir, config.skip_missing_masks
        if skip.strip().lower() not in ("0", "1", "true", "false", "yes", "no"):
            raise ValueError(f"{SKIP_ENV} must be 1/0, true/false or yes/no. Received: {SKIP_ENV}={skip!r}")
        return masks_dir, skip.strip().lower() in ("1", "true", "yes")

    def _find_masks(self, root, curated):
        """(curated rows that have a mask, {image_id: mask path}); applies the skip option."""
        config = self.builder_config
        masks_dir, skip_missing = self._mask_options()
        folder = pathlib.Path(root) / masks_dir  # an absolute masks_dir replaces root
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: mask folder not found (config {config.name!r}, masks_dir={masks_dir!r}; set "
                f"{MASKS_DIR_ENV} to use another). "
                f"Expected layout:\n{EXPECTED_TREE}"
            )
        paths = {image_id: folder / f"{pathlib.Path(image_id).stem}.png" for image_id in curated["image_id"]}
        missing = [image_id for image_id, path in paths.items() if not path.is_file()]
        if missing and not skip_missing:
            raise FileNotFoundError(
                f"No lung mask for image {missing[0]}: {paths[missing[0]]} not found ({len(missing)} of "
                f"{len(paths)} curated images lack a mask in {folder}). Expected layout:\n{EXPECTED_TREE}\n"
                f"To leave such images out (and count them), build with {SKIP_ENV}=1."
            )
        if missing:
            logger.warning("skip_missing_masks: left out %d of %d curated images without a mask in %s, e.g. %s",
                           len(missing), len(paths), folder, missing[:5])
        self.info.metadata["masks_dir"] = str(folder)
        self.info.metadata["skipped_missing_masks"] = len(missing)
        self.info.metadata["skipped_missing_masks_examples"] = sorted(missing)[:20]
        kept = curated[~curated["image_id"].isin(set(missing))].reset_index(drop=True)
        return kept, {image_id: str(path) for image_id, path in paths.items() if image_id not in set(missing)}

    def _generate_examples(self, rows, images, masks=None):
        if not self.builder_config.prepared:
            return self._full_examples(rows, images)
        items = [(row, str(images[row["image_id"]]), masks[row["image_id"]]) for row in rows.to_dict("records")]
        make = functools.partial(_prepared_example, size=self.builder_config.image_size)
        if importlib.util.find_spec("apache_beam") is None:  # no Beam: the same work in this process
            return (make(item) for item in items)
        beam = tfds.core.lazy_imports_lib.lazy_imports.apache_beam
        return beam.Create(items) | beam.Map(make)

    def _full_examples(self, rows, images):
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
            yield row["image_id"], {"image": data, **_row_features(row)}
        if rejected:
            logger.warning("Skipped %d unreadable images", rejected)


def _row_features(row):
    """The label and metadata features of one curated row."""
    age = row["age"]
    return {
        "labels": np.array([row[target] for target in TARGETS], np.float32),
        "no_finding": int(row[NO_FINDING]),
        "patient_id": row["patient_id"],
        "view": row["view"],
        "age": np.float32(-1.0 if np.isnan(age) else age),
        "sex": row["sex"],
        "image_id": row["image_id"],
    }


def _prepared_example(item, size):
    """(row, image path, mask path) -> (key, example) of a masked config; a picklable Beam map function.

    Raises:
        ValueError: the image or mask cannot be read (names the file). Curated images are read before
            anything is written, so a corrupt file stops the build instead of silently thinning a split.
    """
    row, image_path, mask_path = item
    image = cxr_io.read_image(image_path)  # float32 (H, W, 1) in [0, 1]; ImageReadError names the file
    mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)  # uint8 (h, w)
    if mask is None:
        raise ValueError(f"{mask_path}: unreadable lung mask (image {row['image_id']})")
    small, small_mask, distance = prepare_pair(image, mask, size)
    return row["image_id"], {"image": small, "mask": small_mask, "lung_distance": distance, **_row_features(row)}
