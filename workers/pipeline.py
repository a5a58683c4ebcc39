"""Runs a recipe on a model: measure the baseline, apply the steps in order (each result a candidate,
measured the same way), and build the report. Knows nothing of Celery, Redis or S3."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.assets import ModelRecord
from core.job import Job
from core.report import Candidate, Measurement, Report
from core.settings import Settings
from workers.handle import ModelHandle, StepContext
from workers.inputs import batch_dim, generate, load_dataset
from workers.measure import Bench, providers_for, resolve_threads
from workers.pt2 import onnx_to_program, program_to_onnx
from workers.report import build
from workers.steps import apply_step

Checkpoint = Callable[[int, int, str], None]  # (done, total, message); raises JobCancelled


@dataclass
class Outcome:
    report: Report
    artifacts: dict[str, Path]  # artifact name -> file


def run_recipe(job: Job, model: ModelRecord, source: Path, dataset: Path | None, workdir: Path,
               settings: Settings, checkpoint: Checkpoint) -> Outcome:
    recipe, target = job.recipe, job.recipe.target
    if dataset is not None:
        samples, labels = load_dataset(dataset, model.inputs)
    else:
        seed = recipe.search.seed if recipe.search else 0
        samples, labels = generate(model.inputs, target.input_shapes, seed=seed), None
    inputs_path = workdir / "inputs.npz"
    np.savez(inputs_path, **samples)
    program = None
    if model.format == "pt2":
        checkpoint(0, 1, "converting the PyTorch program to ONNX")
        program = source
        source = program_to_onnx(program, workdir / "baseline.onnx", model.inputs, model.outputs, samples,
                                 settings.max_upload_bytes)
    bench = Bench(workdir / "probe", inputs_path, target, resolve_threads(target, settings.intra_op_threads),
                  providers_for(target.device), batch_dim(model.inputs), labels,
                  {k: [1, *v.shape[1:]] for k, v in samples.items()})
    bench.workdir.mkdir(parents=True, exist_ok=True)

    total = 2 + 2 * len(recipe.steps)
    checkpoint(0, total, "measuring the baseline")
    metrics, reference, notes = bench.run(source, None)
    baseline = Candidate(id="baseline", metrics=metrics, notes=notes)

    handle, files, candidates = ModelHandle(source), {}, []
    for i, step in enumerate(recipe.steps, 1):
        done = 2 * i - 1
        checkpoint(done, total, f"step {i}/{len(recipe.steps)}: {step.name}")
        ctx = StepContext(
            workdir=workdir / f"step{i}-{step.name}", settings=settings, inputs=model.inputs,
            samples=samples, labels=labels, from_dataset=dataset is not None, device=target.device,
            providers=bench.providers, threads=bench.threads,
            checkpoint=lambda message, done=done: checkpoint(done, total, message),
        )
        handle = apply_step(handle, step, ctx)
        checkpoint(done + 1, total, f"measuring the result of {step.name}")
        metrics, _, notes = bench.run(handle.onnx_path, reference)
        cid = f"c{i}"
        candidates.append(Candidate(
            id=cid, parent_id=candidates[-1].id if candidates else "baseline",
            steps=[s.as_recipe_item() for s in recipe.steps[:i]], metrics=metrics, notes=ctx.notes + notes,
        ))
        files[cid] = handle.onnx_path

    measurement = Measurement(
        device=target.device, providers=bench.providers, threads=bench.threads, warmup=target.warmup,
        repeats=target.repeats, batch_sizes=target.batch_sizes,
        inputs="dataset" if dataset is not None else "generated", samples=len(next(iter(samples.values()))),
    )
    report = build(job.id, baseline, candidates, recipe.goals, measurement)
    artifacts = {}
    for c in candidates:
        stem = "model" if c.id == report.recommended else c.id
        c.artifact = f"{stem}.onnx"
        artifacts[c.artifact] = files[c.id]
        if program is not None:
            checkpoint(total - 1, total, f"writing {stem}.pt2")
            pt2 = _as_program(files[c.id], workdir / f"{stem}.pt2", model, samples, c)
            if pt2 is not None:
                artifacts[pt2.name] = pt2
    checkpoint(total - 1, total, "uploading the results")
    return Outcome(report, artifacts)


def _as_program(onnx_path: Path, out: Path, model: ModelRecord, samples, candidate: Candidate) -> Path | None:
    """The candidate as a .pt2 too, when its operators have torch equivalents (quantized ones do not)."""
    from workers.torchconv import UnsupportedOp

    try:
        path = onnx_to_program(onnx_path, out, model.inputs, samples)
    except UnsupportedOp as e:
        candidate.notes.append(f"no .pt2 for this candidate: {e}")
        return None
    except Exception as e:  # torch.export refusing a graph is not the job's failure
        candidate.notes.append(f"no .pt2 for this candidate: torch.export failed ({type(e).__name__}: {str(e)[:200]})")
        return None
    candidate.artifact_pt2 = path.name
    return path
