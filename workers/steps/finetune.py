"""finetune: supervised training on the dataset's labels, with augmentation."""

from __future__ import annotations

from core.errors import ErrorCode, InvalidDataset
from core.steps.finetune import Finetune
from workers.steps import implements
from workers.steps.context import ModelHandle, StepContext
from workers.training.loop import label_loss, mixed, train


@implements(Finetune)
def finetune(handle: ModelHandle, p: Finetune, ctx: StepContext) -> ModelHandle:
    if ctx.train.labels is None or not (ctx.train.labels >= 0).any():
        raise InvalidDataset("finetune learns from labels: the dataset needs an array named `labels`",
                             code=ErrorCode.labels_required)
    loss = label_loss(ctx.data.task)

    def objective(out, _teacher, labels, perm, keep):
        return mixed(loss, out, labels, perm, keep)

    return ModelHandle(train(handle.onnx_path, p, ctx, objective, ctx.path("finetuned.onnx")))
