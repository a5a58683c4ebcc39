"""The training loop the improving steps share (distill, finetune, qat).

The student is the current ONNX model run by torch (workers/graph/torch_module.py), its float weights trainable;
after training the weights are written back into the same graph, so the result deploys like the input.
Deterministic given the seed; on CUDA when the worker has it; checks cancellation between batches and
reports progress per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from core.errors import ErrorCode, InvalidDataset, InvalidRecipe
from core.steps.training import Training
from workers.graph.onnx_graph import matches
from workers.graph.torch_module import OnnxModule
from workers.steps.context import StepContext
from workers.training.augment import augment
from workers.training.layers import LayerMatch

Objective = Callable[..., torch.Tensor]  # (student, teacher | None, labels | None, perm | None, keep) -> loss
PROGRESS_EVERY_S = 1.0


def device_for(ctx: StepContext) -> torch.device:
    return torch.device("cuda" if ctx.device == "cuda" and torch.cuda.is_available() else "cpu")


def first(output):
    return output[0] if isinstance(output, tuple) else output


def schedule(p: Training, steps_per_epoch: int) -> Callable[[int], float]:
    total, warm = p.epochs * steps_per_epoch, int(p.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        done = (step - warm) / max(1, total - warm)
        return {"constant": 1.0, "linear": 1.0 - done, "cosine": 0.5 * (1 + math.cos(math.pi * done))}[p.schedule]

    return factor


def optimizer(params, p: Training) -> torch.optim.Optimizer:
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=0.9, weight_decay=p.weight_decay)
    cls = torch.optim.AdamW if p.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=p.lr, weight_decay=p.weight_decay)


def mixed(loss_fn, out: torch.Tensor, target: torch.Tensor, perm, keep: float) -> torch.Tensor:
    """The loss against targets mixed the way the inputs were (mixup / cutmix)."""
    if perm is None:
        return loss_fn(out, target)
    return keep * loss_fn(out, target) + (1 - keep) * loss_fn(out, target[perm])


def label_loss(task: str) -> Callable:
    if task == "classification":
        return masked_cross_entropy
    return lambda out, y: F.mse_loss(out.reshape(y.shape), y.to(out.dtype))


def masked_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labeled samples (label >= 0); zero when the batch has none."""
    mask = y >= 0
    if not bool(mask.any()):
        return out.sum() * 0.0
    return F.cross_entropy(out[mask], y[mask])


def visible_labels(labels: np.ndarray | None, fraction: float, seed: int) -> torch.Tensor | None:
    """The training labels a step may use: labels below 0 are unlabeled already; with fraction < 1 only a
    seeded random fraction of the samples keep theirs (the rest become -1)."""
    if labels is None:
        return None
    y = torch.from_numpy(np.ascontiguousarray(labels))
    if fraction < 1:
        keep = np.random.default_rng(seed).permutation(len(y))[: max(1, int(round(len(y) * fraction)))]
        hidden = torch.full_like(y, -1)
        hidden[torch.from_numpy(keep)] = y[torch.from_numpy(keep)]
        y = hidden
    return y


def warm_up() -> None:
    """One tiny training step, run when a worker process starts, so that its first job does not pay torch's
    first-use costs (autograd, the optimiser, the convolution kernels): about a second on a CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 2))
        optimiser = torch.optim.AdamW(net.parameters())
        out = net(torch.zeros(2, 1, 4, 4))
        label = F.cross_entropy(out, torch.zeros(2, dtype=torch.long))
        (label + F.kl_div(out.log_softmax(-1), out.detach().softmax(-1), reduction="batchmean")).backward()
        optimiser.step()
    finally:
        torch.set_num_threads(threads)


class Trainer:
    """One training run of a step: the student (and teacher) as torch modules, the data, the optimiser."""

    def __init__(self, student: Path, p: Training, ctx: StepContext, teacher: Path | None,
                 prepare: Callable[[OnnxModule], None] | None, layers: LayerMatch | None = None):
        self.p, self.ctx = p, ctx
        self.seed = ctx.seed if p.seed is None else p.seed
        torch.manual_seed(self.seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_num_threads(max(1, ctx.threads))
        self.gen = torch.Generator().manual_seed(self.seed)
        self.device = device_for(ctx)
        if len(ctx.train) == 0:
            raise InvalidDataset("the training split is empty")
        if p.semi_supervised and ctx.data.task != "classification":
            raise InvalidRecipe(f"{p.name}: labeled_fraction, pseudo_labels and consistency need a classifier "
                                "(integer labels)", code=ErrorCode.step_not_applicable)
        self.template = onnx.load(str(student))
        self.model = OnnxModule(self.template).to(self.device).train()
        for name, key in self.model._names.items():
            if matches(name, p.freeze):
                self.model.weights[key].requires_grad_(False)
        if prepare is not None:
            prepare(self.model)
        if teacher is None and p.pseudo_labels:
            teacher = ctx.teacher("baseline")
        self.tutor = OnnxModule(onnx.load(str(teacher))).to(self.device).eval() if teacher is not None else None
        self.layers = layers if self.tutor is not None else None
        if self.layers is not None:
            self.model.taps, self.tutor.taps = self.layers.taps()
        self.inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ctx.train.inputs.items()}
        self.fixed = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ctx.train.fixed.items()}
        self.labels = visible_labels(ctx.train.labels, p.labeled_fraction, self.seed)

    def feed(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        batch = {**batch, **self.fixed}
        return [batch[name].to(self.device) for name in self.model.input_names]

    def step_loss(self, idx: torch.Tensor, objective: Objective) -> torch.Tensor:
        p = self.p
        raw = {k: v[idx] for k, v in self.inputs.items()}
        batch, perm, keep = augment(raw, p.augment, self.gen)
        feed = self.feed(batch)
        y = None if self.labels is None else self.labels[idx].to(self.device)
        with torch.no_grad():
            taught = first(self.tutor(*feed)) if self.tutor is not None else None
        if p.pseudo_labels and taught is not None and y is not None:
            conf, guess = torch.softmax(taught, -1).max(-1)
            y = torch.where((y < 0) & (conf >= p.confidence), guess, y)
        out = first(self.model(*feed))
        loss = objective(out, taught, y, None if perm is None else perm.to(self.device), keep)
        if self.layers is not None:
            loss = loss + self.layers.loss(self.model.tapped, self.tutor.tapped).to(loss.device)
        if p.consistency > 0 and y is not None:
            loss = loss + p.consistency * self.consistency(raw, out, y)
        return loss

    def consistency(self, raw: dict[str, torch.Tensor], weak: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The student's confident answer on the weak view teaches its answer on the strong view."""
        conf, guess = torch.softmax(weak.detach(), -1).max(-1)
        mask = (y < 0) & (conf >= self.p.confidence)
        if not bool(mask.any()):
            return weak.sum() * 0.0
        strong, _, _ = augment(raw, self.p.strong_augment, self.gen)
        return F.cross_entropy(first(self.model(*self.feed(strong)))[mask], guess[mask])

    def run(self, objective: Objective, out: Path) -> Path:
        p, ctx = self.p, self.ctx
        n = min(len(ctx.train), p.max_samples or len(ctx.train))
        per_epoch = math.ceil(n / p.batch_size)
        opt = optimizer([w for w in self.model.parameters() if w.requires_grad], p)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(p, per_epoch))
        last, total = time.monotonic(), 0.0
        for epoch in range(1, p.epochs + 1):
            order, total = torch.randperm(len(ctx.train), generator=self.gen)[:n], 0.0
            for start in range(0, n, p.batch_size):
                idx = order[start : start + p.batch_size]
                loss = self.step_loss(idx, objective)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
                if time.monotonic() - last > PROGRESS_EVERY_S:
                    ctx.checkpoint(f"{p.name}: epoch {epoch}/{p.epochs}, batch {start // p.batch_size + 1}/{per_epoch}")
                    last = time.monotonic()
            ctx.checkpoint(f"{p.name}: epoch {epoch}/{p.epochs}, loss {total / n:.4f}")
        labeled = "" if self.labels is None else f", {int((self.labels >= 0).sum())} of them labeled"
        ctx.notes.append(f"{p.name}: {p.epochs} epochs on {n} training samples{labeled}, final loss {total / n:.4f}")
        onnx.save(self.model.cpu().to_onnx(self.template), str(out))
        return out


def train(student: Path, p: Training, ctx: StepContext, objective: Objective, out: Path,
          teacher: Path | None = None, prepare: Callable[[OnnxModule], None] | None = None,
          layers: LayerMatch | None = None) -> Path:
    return Trainer(student, p, ctx, teacher, prepare, layers).run(objective, out)
