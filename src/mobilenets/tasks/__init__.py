"""Tasks the training engine runs: each turns a batch into a loss and outputs, and owns its metrics.

A :class:`Task` is given to :func:`mobilenets.train.train` (``train(config, task=...)``); the
default is :class:`ClassificationTask`. :func:`topk_correct` is the library's one top-k count.
"""

from .base import Task, masked_mean
from .classification import ClassificationTask
from .detection import DETECTION_ARCHS, DetectionTask
from .metrics import Sums, topk_correct

#: The tasks a run names (``TrainConfig.task``, ``mobilenets train --task``).
TASKS = {"classification": ClassificationTask, "detection": DetectionTask}

__all__ = ["DETECTION_ARCHS", "TASKS", "ClassificationTask", "DetectionTask", "Sums", "Task", "masked_mean",
           "topk_correct"]
