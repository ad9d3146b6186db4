"""Making a float MobileNet ready for integer inference: BatchNorm folding, fake quantization for
QAT, PyTorch's PT2E flow, bias correction and BatchNorm recalibration."""

from .calibrate import correct_bias_for_int8, recalibrate_batchnorm
from .fold import fold_conv_bn, fuse, is_fused
from .pt2e import convert_qat, prepare_qat, pt2e_quantize, x86_quantizer
from .qat import (
    QAT_RANGE_MOMENTUM,
    enable_fake_quant,
    fake_quant_ranges,
    fake_quantize_activations,
    fake_quantize_weight,
    load_fake_quant_ranges,
)

__all__ = ["fuse", "fold_conv_bn", "is_fused", "enable_fake_quant", "fake_quantize_weight", "fake_quant_ranges",
           "load_fake_quant_ranges", "QAT_RANGE_MOMENTUM", "prepare_qat", "convert_qat", "pt2e_quantize",
           "x86_quantizer", "fake_quantize_activations", "correct_bias_for_int8", "recalibrate_batchnorm"]
