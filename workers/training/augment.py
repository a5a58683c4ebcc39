"""Data augmentation on training batches (torch tensors keyed by model input name).

Images are 4-D float inputs (NCHW); token sequences are 2-D integer inputs that are not masks or type /
position ids. Mixup and cutmix also mix the targets: they return the permutation and the weight of the
original samples, which the loss uses.
"""

from __future__ import annotations

import numpy as np
import torch

from core.steps.training import Augment

NOT_TOKENS = ("mask", "type", "position", "segment")


def _images(batch: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in batch.items() if v.is_floating_point() and v.dim() == 4]


def _tokens(batch: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in batch.items() if not v.is_floating_point() and v.dim() == 2
            and not any(word in k.lower() for word in NOT_TOKENS)]


def augment(batch: dict[str, torch.Tensor], a: Augment, gen: torch.Generator
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, float]:
    """(augmented batch, permutation mixed in or None, weight of the original samples)."""
    batch = dict(batch)
    n = len(next(iter(batch.values())))
    for k in _images(batch):
        x = batch[k]
        if a.flip:
            flip = torch.rand(n, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if a.crop_padding:
            x = _random_crop(x, a.crop_padding, gen)
        batch[k] = x
    if a.noise:
        for k, v in batch.items():
            if v.is_floating_point():
                batch[k] = v + a.noise * torch.randn(v.shape, generator=gen)
    if a.token_mask:
        for k in _tokens(batch):
            hit = torch.rand(batch[k].shape, generator=gen) < a.token_mask
            batch[k] = torch.where(hit, torch.full_like(batch[k], a.mask_token), batch[k])
    perm, keep = None, 1.0
    if a.mixup or (a.cutmix and _images(batch)):
        perm = torch.randperm(n, generator=gen)
        alpha = a.mixup or a.cutmix
        keep = float(np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen))).beta(alpha, alpha))
        if a.cutmix and _images(batch):
            keep = _cutmix(batch, perm, keep, gen)
        else:
            for k, v in batch.items():
                if v.is_floating_point():
                    batch[k] = keep * v + (1 - keep) * v[perm]
    return batch, perm, keep


def _random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy, dx = (int(torch.randint(0, 2 * pad + 1, (1,), generator=gen)) for _ in range(2))
    return padded[..., dy : dy + h, dx : dx + w]


def _cutmix(batch: dict[str, torch.Tensor], perm: torch.Tensor, keep: float, gen: torch.Generator) -> float:
    """Pastes a box of the permuted images; returns the fraction of each image that stayed its own."""
    k = _images(batch)[0]
    h, w = batch[k].shape[-2:]
    cut = (1 - keep) ** 0.5
    bh, bw = int(h * cut), int(w * cut)
    y0 = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
    x0 = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
    for name in _images(batch):
        x = batch[name].clone()
        x[..., y0 : y0 + bh, x0 : x0 + bw] = batch[name][perm][..., y0 : y0 + bh, x0 : x0 + bw]
        batch[name] = x
    return 1 - (bh * bw) / (h * w)
