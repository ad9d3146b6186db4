"""Training: a run's settings, the recipes, distribution, the loop, and the paper's experiments.

From Python::

    from mobilenets.train import TrainConfig, train
    summary = train(TrainConfig(data="../shared/data/cifar10-jpeg.tar.gz", out="runs/c10", width=0.5, epochs=30))

Another task (:class:`mobilenets.tasks.Task`) runs through the same engine: ``train(config, task=MyTask())``.
"""

from .experiment import TABLES, ExperimentRun, run_experiment, write_reports
from .recipes import (
                      AMP_MODES,
                      OPTIMIZER_DEFAULTS,
                      OPTIMIZERS,
                      RECIPES,
                      SCHEDULES,
                      ModelEma,
                      Recipe,
                      lr_factor,
                      make_optimizer,
                      param_groups,
)
from .trainer import (
                      TIME_KEYS,
                      RunSettings,
                      TrainConfig,
                      TrainingDiverged,
                      build_model,
                      fit,
                      load_trained,
                      train,
)

__all__ = [
                      "AMP_MODES",
                      "OPTIMIZERS",
                      "OPTIMIZER_DEFAULTS",
                      "RECIPES",
                      "SCHEDULES",
                      "TABLES",
                      "TIME_KEYS",
                      "ExperimentRun",
                      "ModelEma",
                      "Recipe",
                      "RunSettings",
                      "TrainConfig",
                      "TrainingDiverged",
                      "build_model",
                      "fit",
                      "load_trained",
                      "lr_factor",
                      "make_optimizer",
                      "param_groups",
                      "run_experiment",
                      "train",
                      "write_reports",
]
