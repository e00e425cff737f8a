"""NIH-style metadata CSVs for the tests of tfcxr.data.nih, nih_metadata and nih_splits."""

import numpy as np

# The original Data_Entry_2017.csv: "[Width,Height]" headers split in two, trailing empty column.
HEADER_2017 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
ROWS = [
    ("00000001_000.png", "Mass|Nodule", 0, 1, "058Y", "M", "PA"),
    ("00000001_001.png", "No Finding", 1, 1, "58", "M", "AP"),
    ("00000002_000.png", "Cardiomegaly", 0, 2, "6M", "F", "PA"),
    ("00000003_000.png", "Edema|Effusion", 0, 3, "40", "F", "AP"),
    ("00000004_000.png", "Fibrosis", 0, 4, "70", "M", "PA"),
]


def write_2017(path, rows=ROWS):
    """Write `rows` (image, findings, follow-up, patient, age, sex, view) in the Data_Entry_2017.csv layout."""
    lines = [HEADER_2017] + [",".join(map(str, row)) + ",2048,2500,0.143,0.143," for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def synthetic_rows(num_patients=300, seed=0, first_patient=1):
    """NIH-like rows: 1-4 images per patient, labels drawn from targets, others and No Finding."""
    rng = np.random.default_rng(seed)
    choices = ["No Finding", "Mass", "Nodule", "Pneumonia", "Edema", "Fibrosis", "Mass|Effusion", "Atelectasis"]
    rows = []
    for patient in range(first_patient, first_patient + num_patients):
        for visit in range(rng.integers(1, 5)):
            label = choices[rng.choice(len(choices), p=[0.4, 0.1, 0.1, 0.08, 0.08, 0.06, 0.08, 0.1])]
            rows.append((f"{patient:08d}_{visit:03d}.png", label, visit, patient, "50", "F", "PA"))
    return rows
