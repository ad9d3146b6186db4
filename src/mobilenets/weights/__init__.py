"""Loading and saving weights of any source: our checkpoints, state dicts, timm, safetensors, and
Google's TFLite and Keras files (read by structure, not by name)."""

from .detector import DETECTOR_FORMAT, is_detector_file, load_detector, save_detector
from .pretrained import (
    load_pretrained,
    read_weights,
    save_checkpoint,
    state_dict_config,
)

__all__ = ["load_detector", "save_detector", "is_detector_file", "DETECTOR_FORMAT", "load_pretrained", "read_weights", "save_checkpoint", "state_dict_config"]
