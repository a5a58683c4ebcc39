"""qat: quantization-aware training. Weights (per output channel, symmetric) and the activations entering
each Conv / MatMul / Gemm (per tensor, asymmetric, ranges tracked while training) are fake-quantized to
int8 with a straight-through estimator; the trained model is then quantized to int8 QDQ with the same
scheme by onnxruntime, calibrated on the training data."""

from __future__ import annotations

import torch

from core.steps.qat import Qat
from core.steps.quantize import Quantize
from workers.graph.onnx_graph import matches
from workers.graph.torch_module import OnnxModule
from workers.steps import implements
from workers.steps.context import ModelHandle, StepContext
from workers.steps.quantize import int8
from workers.training.loop import label_loss, mixed, train
from workers.training.objectives import loss_kind, objective_for


def fake_weight(w: torch.Tensor, axis: int) -> torch.Tensor:
    dims = [d for d in range(w.dim()) if d != axis]
    scale = w.detach().abs().amax(dim=dims, keepdim=True).clamp(min=1e-8) / 127.5
    q = torch.clamp(torch.round(w / scale), -128, 127) * scale
    return w + (q - w).detach()


class ActivationRange(torch.nn.Module):
    """Running min / max of an activation, and its int8 fake quantization."""

    def __init__(self, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x
        if self.training:
            lo, hi = x.detach().min(), x.detach().max()
            m = self.momentum if bool(self.seen) else 0.0
            self.low.copy_(m * self.low + (1 - m) * torch.minimum(lo, torch.zeros_like(lo)))
            self.high.copy_(m * self.high + (1 - m) * torch.maximum(hi, torch.zeros_like(hi)))
            self.seen.fill_(True)
        scale = ((self.high - self.low) / 255).clamp(min=1e-8)
        zero = torch.round(-128 - self.low / scale)
        q = (torch.clamp(torch.round(x / scale) + zero, -128, 127) - zero) * scale
        return x + (q - x).detach()


def instrument(model: OnnxModule, exclude: list[str]) -> int:
    """Hooks fake quantization into every Conv / MatMul (constant weight) / Gemm input; returns how many."""
    ranges = torch.nn.ModuleList()
    weights = set(model._names)
    for index, ((op, ins, _, attrs), name) in enumerate(zip(model.nodes, model.node_names, strict=True)):
        if op not in ("Conv", "MatMul", "Gemm") or len(ins) < 2 or ins[1] not in weights or matches(name, exclude):
            continue
        axis = {"Conv": 0, "MatMul": 1}.get(op, 0 if attrs.get("transB", 0) else 1)
        observer = ActivationRange()
        ranges.append(observer)
        model.hooks[index] = {0: observer, 1: lambda w, axis=axis: fake_weight(w, axis)}
    model.qat_ranges = ranges
    return len(ranges)


@implements(Qat)
def qat(handle: ModelHandle, p: Qat, ctx: StepContext) -> ModelHandle:
    task = ctx.data.task
    if p.teacher == "baseline":
        objective = objective_for(loss_kind("auto", task), p.temperature, 0.9, task)
        teacher = ctx.teacher("baseline")
    else:
        hard = label_loss(task)

        def objective(out, _teacher, labels, perm, keep):
            return mixed(hard, out, labels, perm, keep)

        teacher = None
    counted: list[int] = []
    trained = train(handle.onnx_path, p, ctx, objective, ctx.path("qat-float.onnx"), teacher=teacher,
                    prepare=lambda m: counted.append(instrument(m, p.exclude)))
    ctx.checkpoint("qat: quantizing the trained model to int8")
    settings = Quantize(mode="static", per_channel=True, method="minmax", exclude=p.exclude,
                        calibration_samples=ctx.calibration_samples)
    out = int8(trained, ctx.path("qat-int8.onnx"), settings, ctx)
    ctx.notes.append(f"qat: {counted[0]} layers trained with int8 fake quantization, then quantized (QDQ)")
    return ModelHandle(out)
