"""Everything a worker needs to run any node of a job: the model, the data split the same way on every
worker, the bench, the baseline's outputs to compare with, and the nodes' models, shared through S3
under `{tenant}/jobs/{id}/work/{attempt}/`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

from core.assets import AssetStore, ModelRecord
from core.job import Job
from core.objectstore import ObjectStore, job_prefix
from core.report import Candidate, Normalization
from core.settings import Settings
from core.steps import Step
from workers.engine.data import JobData, batch_dim, job_data
from workers.engine.fleet import POLL_S, Fleet
from workers.engine.plan import BASELINE, INPUT, Node
from workers.engine.telemetry import record_step
from workers.graph.normalize import normalize
from workers.graph.program import program_to_onnx
from workers.measure.bench import Bench, providers_for, resolve_threads
from workers.measure.quality import default_metrics
from workers.steps import apply_step
from workers.steps.context import ModelHandle, StepContext

STEP = TypeAdapter(Step)


@dataclass
class Workspace:
    job: Job
    model: ModelRecord
    settings: Settings
    objects: ObjectStore
    workdir: Path
    data: JobData
    bench: Bench
    reference: list[np.ndarray]  # the baseline's outputs on the evaluation inputs; [] until measured / fetched
    normalization: Normalization | None = None  # what the import normalization did (the coordinator's side)

    @property
    def shared(self) -> str:
        return f"{job_prefix(self.job.tenant, self.job.id)}work/{self.job.attempts}/"

    def local(self, node_id: str) -> Path:
        """The node's model on this worker (fetched from S3 when another worker made it)."""
        path = self.workdir / "nodes" / f"{node_id}.onnx"
        if not path.exists():
            self.objects.download_file(self.shared + f"{node_id}.onnx", path)
        return path

    def share(self, node_id: str, path: Path) -> Path:
        local = self.workdir / "nodes" / f"{node_id}.onnx"
        local.parent.mkdir(parents=True, exist_ok=True)
        if path != local:
            local.write_bytes(path.read_bytes())
        self.objects.upload_file(self.shared + f"{node_id}.onnx", local)
        return local


def _data_and_bench(job: Job, model: ModelRecord, settings: Settings, workdir: Path, dataset: Path | None):
    recipe, target = job.recipe, job.recipe.target
    data = job_data(dataset, model.inputs, recipe)
    metrics = recipe.data.quality or default_metrics(data.task, data.eval.labels)
    bench = Bench.of(data, workdir / "probe", target, resolve_threads(target, settings.intra_op_threads),
                     providers_for(target), batch_dim(model.inputs), metrics)
    return data, bench


def _dataset(objects: ObjectStore, job: Job, workdir: Path) -> Path | None:
    if not job.dataset_id:
        return None
    key = AssetStore(objects).file_key(job.tenant, "datasets", job.dataset_id, "data.npz")
    return objects.download_file(key, workdir / "dataset.npz")


def prepare(job: Job, model: ModelRecord, source: Path, settings: Settings, objects: ObjectStore, workdir: Path,
            tick: Callable[[str], None]) -> Workspace:
    """The coordinator's side: data, bench, and the baseline (converted from .pt2 when needed) shared."""
    dataset = _dataset(objects, job, workdir)
    data, bench = _data_and_bench(job, model, settings, workdir, dataset)
    if model.format == "pt2":
        tick("converting the PyTorch program to ONNX")
        source = program_to_onnx(source, workdir / "baseline.onnx", model.inputs, model.outputs, data.eval,
                                 settings.max_upload_bytes)
    ws = Workspace(job, model, settings, objects, workdir, data, bench, [])
    ws.share(BASELINE, source)
    tick("normalizing the graph")
    done = normalize(source, workdir / "input.onnx", data.eval)
    ws.normalization = Normalization(changed=done["changed"], already_quantized=done["quantized"],
                                     notes=done["notes"])
    ws.share(INPUT, workdir / "input.onnx")
    return ws


def measure_baseline(ws: Workspace, fleet: Fleet, tick: Callable[[str], None]) -> Candidate:
    """The baseline measured, and its outputs shared for the helpers to compare their candidates with."""
    tick("measuring the baseline")
    metrics, ws.reference, notes = ws.bench.run(ws.local(BASELINE), None)
    ref_path = ws.workdir / "reference.npz"
    np.savez(ref_path, *ws.reference)
    ws.objects.upload_file(ws.shared + "reference.npz", ref_path)
    fleet.baseline_measured()
    return Candidate(id=BASELINE, metrics=metrics, notes=notes)


def attach(job: Job, model: ModelRecord, settings: Settings, objects: ObjectStore, workdir: Path) -> Workspace:
    """A helper's side: the same data and bench; the baseline's outputs come later (baseline_outputs)."""
    data, bench = _data_and_bench(job, model, settings, workdir, _dataset(objects, job, workdir))
    return Workspace(job, model, settings, objects, workdir, data, bench, [])


def baseline_outputs(ws: Workspace, fleet: Fleet, checkpoint: Callable[[str], None]) -> list[np.ndarray]:
    """What candidates are compared with: a helper that made its node while the coordinator was still measuring
    the baseline waits for it here."""
    while not ws.reference:
        if fleet.baseline_ready():
            with np.load(ws.objects.download_file(ws.shared + "reference.npz", ws.workdir / "reference.npz")) as ref:
                ws.reference = [ref[f"arr_{i}"] for i in range(len(ref.files))]
        else:
            checkpoint("waiting for the baseline's measurement")
            time.sleep(POLL_S)
    return ws.reference


def same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


class Heartbeat:
    """Renews a node's lease while its step runs, so that only a dead worker loses it."""

    def __init__(self, fleet: Fleet, node_id: str):
        self.fleet, self.node_id, self.every_s = fleet, node_id, max(1.0, fleet.lease_s / 6)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            self.fleet.renew(self.node_id)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def run_node(ws: Workspace, fleet: Fleet, node: Node, checkpoint: Callable[[str], None]) -> Candidate:
    """Applies the node's step to its parent's model, measures the result, shares both."""
    step = STEP.validate_python(node.item)
    recipe = ws.job.recipe
    ctx = StepContext(
        workdir=ws.workdir / f"{node.id}-{step.name}", settings=ws.settings, inputs=ws.model.inputs, data=ws.data,
        seed=recipe.data.seed, device=recipe.target.device, providers=ws.bench.providers, threads=ws.bench.threads,
        batch_sizes=[ws.bench.fixed_batch] if ws.bench.fixed_batch else recipe.target.batch_sizes,
        calibration_samples=recipe.data.calibration_samples,
        teachers={k: ws.local(v) for k, v in node.teachers.items()}, checkpoint=checkpoint,
        goals=recipe.goals, metrics=ws.bench.metrics,
    )
    with Heartbeat(fleet, node.id):
        started = time.monotonic()
        parent = ws.local(INPUT if node.parent == BASELINE else node.parent)  # steps start from the normalized graph
        result = apply_step(ModelHandle(parent), step, ctx)
        record_step(step.name, time.monotonic() - started)  # /metrics
        if same_file(parent, result.onnx_path):
            ctx.notes.append(f"{step.name} changed nothing: the model it made is the same file as its input")
        ws.share(node.id, result.onnx_path)
        fleet.release(node)  # its children may start on other workers while this one measures it
        checkpoint(f"{node.id}: measuring the result of {step.name}")
        metrics, _, notes = ws.bench.run(result.onnx_path, baseline_outputs(ws, fleet, checkpoint))
    candidate = Candidate(id=node.id, parent_id=node.parent, steps=node.steps, metrics=metrics,
                          notes=ctx.notes + notes, decisions=ctx.decisions)
    fleet.finish(node, candidate.model_dump(mode="json"))
    return candidate
