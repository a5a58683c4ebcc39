"""The training loop and the augmentation that distillation, fine-tuning, QAT and growth share."""
