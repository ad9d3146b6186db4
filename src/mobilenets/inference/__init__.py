"""Running a trained classifier: predictions for images, accuracy on labelled folders."""

from .classifier import Classifier, Prediction
from .evaluate import evaluate_dataset, evaluate_imagenet_folder, imagenet_target

__all__ = ["Classifier", "Prediction", "evaluate_dataset", "evaluate_imagenet_folder", "imagenet_target"]
