"""Loading and saving weights of any source: our checkpoints, state dicts, timm, safetensors, and
Google's TFLite and Keras files (read by structure, not by name)."""

from .pretrained import (
    load_pretrained,
    read_weights,
    save_checkpoint,
    state_dict_config,
)

__all__ = ["load_pretrained", "read_weights", "save_checkpoint", "state_dict_config"]
