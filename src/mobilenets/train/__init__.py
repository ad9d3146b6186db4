"""Training: a run's settings, the recipes, distribution, the loop, and the paper's experiments.

From Python::

    from mobilenets.train import TrainConfig, train
    summary = train(TrainConfig(data="../shared/data/cifar10-jpeg.tar.gz", out="runs/c10", width=0.5, epochs=30))
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
                      TrainConfig,
                      TrainingDiverged,
                      build_model,
                      fit,
                      load_trained,
                      train,
)

__all__ = ["TrainConfig", "train", "fit", "TrainingDiverged", "build_model", "load_trained", "TIME_KEYS",
           "Recipe", "RECIPES", "OPTIMIZER_DEFAULTS", "OPTIMIZERS", "SCHEDULES", "AMP_MODES", "ModelEma", "lr_factor",
           "make_optimizer", "param_groups", "TABLES", "ExperimentRun", "run_experiment", "write_reports"]
