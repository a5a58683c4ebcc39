"""Parameters shared by the steps that train: optimisation, schedule, augmentation, determinism."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.steps.base import StepParams


class Augment(BaseModel):
    """Data augmentation, applied to training batches only. Image options need NCHW float inputs, token
    masking integer sequence inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    noise: float = Field(0.0, ge=0, le=10, description="Std of gaussian noise added to float inputs.")
    mixup: float = Field(0.0, ge=0, le=10, description="Beta(alpha, alpha) mixup of samples and targets (0: off).")
    cutmix: float = Field(0.0, ge=0, le=10, description="Beta(alpha, alpha) cutmix for NCHW images (0: off).")
    crop_padding: int = Field(0, ge=0, le=64, description="Random crop after zero padding by this many pixels.")
    flip: bool = Field(False, description="Random horizontal flip of NCHW images.")
    token_mask: float = Field(0.0, ge=0, lt=1, description="Probability of replacing a token id by mask_token.")
    mask_token: int = Field(103, ge=0, description="The id masked tokens become ([MASK] is 103 in BERT vocabularies).")


class Training(StepParams):
    """What every training step accepts."""

    trains = True
    formats = ("onnx", "pt2")
    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0, le=1)
    schedule: Literal["constant", "cosine", "linear"] = Field("cosine", description="Learning-rate decay over the "
                                                                                     "run (after warmup).")
    warmup_epochs: float = Field(0.0, ge=0, le=100)
    augment: Augment = Field(default_factory=Augment)
    freeze: list[str] = Field(default_factory=list, description="Globs of weight (initializer) names left as they "
                              "are, e.g. ['*embeddings*'].")
    seed: int | None = Field(None, description="Default: the recipe's data.seed.")
    max_samples: int | None = Field(None, ge=1, description="Train on at most this many samples per epoch.")
    # learning from unlabeled data (classifiers); labels below 0 in the dataset also mark unlabeled samples
    labeled_fraction: float = Field(1.0, gt=0, le=1, description="Use the labels of only this fraction of the "
                                    "training samples (the rest count as unlabeled), e.g. 0.1.")
    pseudo_labels: bool = Field(False, description="The teacher (the baseline unless the step names one) labels "
                                "unlabeled samples it is confident about.")
    confidence: float = Field(0.9, gt=0, lt=1, description="Least softmax probability for a pseudo-label.")
    consistency: float = Field(0.0, ge=0, le=100, description="Weight of consistency regularisation: on unlabeled "
                               "samples, the student's confident answer on a weakly augmented view is the target "
                               "of its answer on a strongly augmented one.")
    strong_augment: Augment = Field(default_factory=lambda: Augment(noise=0.15, crop_padding=1, token_mask=0.15),
                                    description="The strong view for consistency.")

    @property
    def semi_supervised(self) -> bool:
        return self.labeled_fraction < 1 or self.pseudo_labels or self.consistency > 0
