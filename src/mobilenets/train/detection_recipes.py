"""Detection recipes, registered beside the classification ones in :data:`~.recipes.RECIPES`.

``ssd_tf`` is the TF Object Detection API's ``ssd_mobilenet_v1_coco`` (the paper's Table 13 SSD);
``ssd_cosine`` a modern SGD + cosine recipe after torchvision's SSDLite reference. The fields that
only image classification reads (crops, padding, cutout, label smoothing) are left at neutral values.
"""

from __future__ import annotations

from .recipes import RECIPES, Recipe

__all__ = ["DETECTION_RECIPES"]

DETECTION_RECIPES: dict[str, Recipe] = {
    "ssd_tf": Recipe(
        name="ssd_tf",
        source=("TF Object Detection API, samples/configs/ssd_mobilenet_v1_coco.config: rms_prop_optimizer "
                "(decay 0.9, momentum 0.9, epsilon 1.0), initial_learning_rate 0.004 at batch_size 24, "
                "exponential_decay_learning_rate decay_factor 0.95 every decay_steps 800720, num_steps 200000 "
                "(= 40.6 epochs of 118287 COCO images; the 800720 steps (162.5 epochs) lie beyond the run, so "
                "TF's rate is in effect constant): scaled to x0.95 every epoch here, which suits short "
                "fine-tuning runs, l2_regularizer 0.00004 on the convolutions, no moving "
                "average; augmentation random_horizontal_flip + ssd_random_crop (DetectionDataset)."),
        optimizer="rmsprop", lr=0.004, lr_batch=24, schedule="exp", epochs=40, batch_size=24,
        weight_decay=4e-5, momentum=0.9, decay_rate=0.95, decay_epochs=1.0,
        crop_scale=(1.0, 1.0), pad=0, eval_crop=1.0, amp="bf16",
    ),
    "ssd_cosine": Recipe(
        name="ssd_cosine",
        source=("Modern SSD training after torchvision's references/detection (ssdlite320_mobilenet_v3_large: "
                "SGD momentum 0.9, lr 0.15 for a global batch of 192 (24 x 8 GPUs), cosine schedule, weight "
                "decay 4e-5, 600 epochs, SSD augmentation), with a 1-epoch linear warmup; weight decay off "
                "BatchNorm, biases and depthwise filters as for the classifiers; 200 epochs here."),
        optimizer="sgd", lr=0.15, lr_batch=192, schedule="cosine", epochs=200, batch_size=192,
        weight_decay=4e-5, momentum=0.9, warmup_epochs=1.0, crop_scale=(1.0, 1.0), pad=0, eval_crop=1.0,
        amp="bf16",
    ),
}

for _name, _recipe in DETECTION_RECIPES.items():
    RECIPES.setdefault(_name, _recipe)
