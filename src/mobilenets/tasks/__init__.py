"""Tasks the training engine runs: each turns a batch into a loss and outputs, and owns its metrics.

A :class:`Task` is given to :func:`mobilenets.train.train` (``train(config, task=...)``); the
default is :class:`ClassificationTask`. :func:`topk_correct` is the library's one top-k count.
"""

from .base import Task, masked_mean
from .classification import ClassificationTask
from .detection import DETECTION_ARCHS, DetectionTask
from .distill import (
    DISTILL_LOSSES,
    EmbeddingDistillationTask,
    LogitDistillationTask,
    MultiLabelTask,
    embedding_loss,
    kd_loss,
    multilabel_loss,
)
from .metrics import (
    Sums,
    agreement_count,
    cosine_sum,
    knn_accuracy,
    linear_probe_accuracy,
    mean_average_precision,
    tar_at_far,
    topk_correct,
)
from .teachers import Teacher, load_teacher

#: The tasks a run names (``TrainConfig.task``, ``mobilenets train --task``).
TASKS = {"classification": ClassificationTask, "detection": DetectionTask, **DISTILL_LOSSES}

__all__ = ["DETECTION_ARCHS", "DISTILL_LOSSES", "TASKS", "ClassificationTask", "DetectionTask",
           "EmbeddingDistillationTask", "LogitDistillationTask", "MultiLabelTask", "Sums", "Task", "Teacher",
           "agreement_count", "cosine_sum", "embedding_loss", "kd_loss", "knn_accuracy", "linear_probe_accuracy",
           "load_teacher", "masked_mean", "mean_average_precision", "multilabel_loss", "tar_at_far", "topk_correct"]
