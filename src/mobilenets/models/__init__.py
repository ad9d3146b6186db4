"""Models: the Table 1 builder and the registry of named configurations."""

from .mobilenet_v1 import (
           CIFAR_STEM_ROWS,
           FEATURE_LAYERS,
           MOBILENET_V1_CONV_DEFS,
           SHALLOW_REMOVED_LAYERS,
           Conv,
           DepthSepConv,
           MobileNetV1,
           conv_defs_for,
           mobilenet_v1,
)
from .pretrained import PretrainedInfo, pretrained_cfg
from .registry import (
           OFFICIAL_MODELS,
           OfficialModel,
           create_model,
           get_config,
           list_models,
)

__all__ = ["PretrainedInfo", "pretrained_cfg", "Conv", "DepthSepConv", "MOBILENET_V1_CONV_DEFS", "SHALLOW_REMOVED_LAYERS", "FEATURE_LAYERS",
           "CIFAR_STEM_ROWS", "conv_defs_for", "MobileNetV1", "mobilenet_v1", "OFFICIAL_MODELS", "OfficialModel",
           "create_model", "get_config", "list_models"]
