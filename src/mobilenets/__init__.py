"""mobilenets: the MobileNet V1 family (Howard et al., 2017), its exact costs, and tools around it.

Quick start::

    import mobilenets
    model = mobilenets.mobilenet_v1(width_multiplier=0.5, resolution=160)
    report = mobilenets.cost(model)          # Mult-Adds and params, per layer and in total
    print(report.mult_adds, report.params)

    mobilenets.list_models()                 # the 16 official (α, ρ) configurations
    mobilenets.create_model("mobilenet_v1_075_192", num_classes=10)
"""

from .analysis import CostReport, LayerCost, cost
from .config import MobileNetConfig
from .deploy import ExportReport, export
from .inference import Classifier
from .models import (
    MOBILENET_V1_CONV_DEFS,
    OFFICIAL_MODELS,
    MobileNetV1,
    create_model,
    get_config,
    list_models,
    mobilenet_v1,
)
from .quant import fuse
from .weights import load_detector, load_pretrained, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "MobileNetConfig",
    "MobileNetV1",
    "MOBILENET_V1_CONV_DEFS",
    "mobilenet_v1",
    "create_model",
    "get_config",
    "list_models",
    "OFFICIAL_MODELS",
    "cost",
    "CostReport",
    "LayerCost",
    "load_pretrained",
    "load_detector",
    "ssd_mobilenet_v1",
    "faster_rcnn_mobilenet_v1",
    "save_checkpoint",
    "Classifier",
    "export",
    "ExportReport",
    "fuse",
    "__version__",
]


def __getattr__(name: str):  # PEP 562: the detectors load torchvision's detection stack (~2-3 s) on first use
    if name in ("ssd_mobilenet_v1", "faster_rcnn_mobilenet_v1"):
        from .models import detection

        return getattr(detection, name)
    raise AttributeError(f"module 'mobilenets' has no attribute {name!r}")
