"""Training: a run's settings, the recipes, distribution, the loop, and the paper's experiments.

From Python::

    from mobilenets.train import TrainConfig, train
    summary = train(TrainConfig(data="../shared/data/cifar10-jpeg.tar.gz", out="runs/c10", width=0.5, epochs=30))

Another task (:class:`mobilenets.tasks.Task`) runs through the same engine: ``train(config, task=MyTask())``.
"""

from .distill_experiments import DISTILL_TABLES, run_distill_experiment
from .engine import TIME_KEYS, TrainingDiverged
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
from .settings import RunSettings, TrainConfig
from .trainer import build_model, fit, load_trained, train

__all__ = ["TrainConfig", "RunSettings", "train", "fit", "TrainingDiverged", "TIME_KEYS", "build_model",
           "load_trained", "Recipe", "RECIPES", "OPTIMIZER_DEFAULTS", "OPTIMIZERS", "SCHEDULES", "AMP_MODES",
           "ModelEma", "lr_factor", "make_optimizer", "param_groups", "TABLES", "ExperimentRun", "run_experiment",
           "write_reports", "DISTILL_TABLES", "run_distill_experiment"]
