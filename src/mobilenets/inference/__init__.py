"""Running a trained classifier: predictions for images, accuracy on labelled folders."""

from .classifier import Classifier, Prediction
from .detect import Detection, Detector, evaluate_detector, resize_for_detector
from .evaluate import evaluate_dataset, evaluate_imagenet_folder, imagenet_target

__all__ = ["Detector", "Detection", "evaluate_detector", "resize_for_detector", "Classifier", "Prediction", "evaluate_dataset", "evaluate_imagenet_folder", "imagenet_target"]
