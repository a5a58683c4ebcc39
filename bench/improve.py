"""The improve half of the survey, before / after, in one run:
- digits CNN: the same shrink with and without recovery (shrink-and-improve), grow-improve-and-shrink,
  efficient layers before and after distillation, and, with only 10 % of the labels, supervised against
  semi-supervised fine-tuning of a pruned student (same seed, same epochs), against the fp32 baseline
  (accuracy on the CNN's own held-out digits);
- all-MiniLM-L6-v2: half the layers dropped, with and without distillation on real English sentences
  (mean sentence-embedding cosine to the fp32 model on held-out sentences).

    .venv/bin/python bench/improve.py [--repeats N] [--rounds N] [--only cnn|minilm]
"""

from __future__ import annotations

import argparse

from harness import REPEATS, ROUNDS, digits_cnn, minilm, run_configs

from core.recipes import builtin_recipe


def steps_of(name: str, without: tuple[str, ...] = ()) -> list[dict]:
    return [s.as_recipe_item() for s in builtin_recipe(name).steps if s.name not in without]


CNN = [
    ("baseline (fp32)", []),
    ("shrink only: prune 70% + quantize", steps_of("shrink-and-improve", ("distill",))),
    ("shrink-and-improve", steps_of("shrink-and-improve")),
    ("grow-improve-and-shrink", steps_of("grow-improve-and-shrink")),
    ("efficient layers, before recovery", steps_of("efficient-layers-and-distill", ("distill",))),
    ("efficient-layers-and-distill", steps_of("efficient-layers-and-distill")),
    ("prune 50% + finetune, 10% labels", [{"prune": {"method": "structured", "ratio": 0.5}},
                                          {"finetune": {"epochs": 20, "lr": 0.002, "labeled_fraction": 0.1}}]),
    ("  same, semi-supervised", [{"prune": {"method": "structured", "ratio": 0.5}},
                                 {"finetune": {"epochs": 20, "lr": 0.002, "labeled_fraction": 0.1,
                                               "pseudo_labels": True, "consistency": 1.0}}]),
]
MINILM = [
    ("baseline (fp32)", []),
    ("drop half the layers", [{"drop_layers": {"keep_every": 2}}]),
    ("drop half + distill (2 epochs)", [{"drop_layers": {"keep_every": 2}},
                                        {"distill": {"epochs": 2, "lr": 0.0001, "batch_size": 16,
                                                     "freeze": ["*embeddings*"]}}]),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, help=f"timed runs per batch size in a round (default {REPEATS})")
    ap.add_argument("--rounds", type=int, help="side-by-side rounds; p50 = the median round's "
                    f"(default {ROUNDS})")
    ap.add_argument("--only", choices=["cnn", "minilm"])
    args = ap.parse_args()
    run_configs([("cnn", digits_cnn, CNN), ("minilm", minilm, MINILM)], args.repeats, args.only, args.rounds)


if __name__ == "__main__":
    main()
