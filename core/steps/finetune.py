from __future__ import annotations

from typing import Literal

from core.steps.training import Training


class Finetune(Training):
    """Supervised fine-tuning on the dataset's labels, with augmentation."""

    summary = ("Supervised fine-tuning on the dataset's labels (cross-entropy for integer labels, MSE otherwise) "
               "with augmentation: noise, mixup, cutmix, random crop and flip for images, token masking.")
    dataset = "yes, with labels"
    step: Literal["finetune"] = "finetune"

    @property
    def needs_labels(self) -> bool:
        return True
