"""`gmenet predict`: find faces in photos, frames or crops and classify their expression.

detect.py (face detectors), inputs.py (what is read), classify.py (models as classifiers), pipeline.py
(the run from files to result dicts) and annotate.py (`--save`). Each face is classified at the largest
trained LR size not above the face's own size, so no detail is invented.
"""

from gmenet_cli.predict.annotate import Saver, annotate, save_annotated
from gmenet_cli.predict.classify import (
                                         DEFAULT_ONNX,
                                         DEFAULT_WEIGHTS,
                                         Classifier,
                                         OnnxClassifier,
                                         TorchClassifier,
                                         load_classifier,
)
from gmenet_cli.predict.detect import FaceDetector, HaarDetector, YuNetDetector, detect_faces, make_detector
from gmenet_cli.predict.inputs import Item, expand_inputs, iter_items, read_box_csv
from gmenet_cli.predict.pipeline import run

__all__ = ["annotate", "save_annotated", "Saver", "DEFAULT_ONNX", "DEFAULT_WEIGHTS", "Classifier", "OnnxClassifier",
           "TorchClassifier", "load_classifier", "FaceDetector", "HaarDetector", "YuNetDetector", "detect_faces",
           "make_detector", "Item", "expand_inputs", "iter_items", "read_box_csv", "run"]
