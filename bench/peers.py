"""Pareto's built-in `int8` recipe against the int8 flows a user would otherwise pick, on both reference models,
in one run: plain onnxruntime `quantize_dynamic` / `quantize_static` with their defaults, Microsoft Olive,
OpenVINO NNCF and Intel Neural Compressor, each with its documented default int8 flow for an ONNX model on CPU.

Each peer is installed by this script into its own virtual environment (bench/.venvs/<peer>, from PyPI, pinned
versions; reused on later runs while its pins are unchanged) and run there by a small script in bench/peers/,
calibrated on the same samples as Pareto. Every output, Pareto's and each peer's, is measured by the same harness
(bench/harness.py: the job's probe process, onnxruntime CPU): size, p50 latency at batch 1 and 32 (MiniLM at
sequence 128), quality (digits accuracy on the CNN's held-out digits; MiniLM mean sentence-embedding cosine to
fp32). Then every output's latency is measured again side by side (in one process, timed one after another
in --rounds rounds of --repeats runs, each in a session made for those runs), and its p50 is the median round's:
the machine is shared and its speed drifts, and side by side a slow spell slows every output of a round alike.
A peer that cannot be installed or run is reported in the table with its error.

    .venv/bin/python bench/peers.py [--repeats N] [--rounds N] [--only cnn|minilm]
                                    [--peers ort-dynamic,ort-static,olive,nncf,nncf-transformer,inc]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from harness import CACHE, REPEATS, ROUNDS, Reference, Row, digits_cnn, measure_chain, measure_onnx, minilm, remeasure

from core.recipe import Recipe
from core.steps.quantize import Quantize
from workers.engine.data import job_data

BENCH = Path(__file__).resolve().parent
SCRIPTS = BENCH / "peers"
VENVS = BENCH / ".venvs"
OUT = CACHE / "peers"
BATCHES = [1, 32]
PARETO_INT8 = [{"quantize": {"mode": "auto"}}]  # the built-in `int8` recipe's step
INSTALL_TIMEOUT_S = 3600
RUN_TIMEOUT_S = 3600
NOISE = 0.05  # p50 differences below this fraction are flagged as noise in the notes (never in the verdict)
ORT_PINS = ("onnx==1.23.2", "onnxruntime==1.32.0")  # the versions Pareto's own environment runs


@dataclass(frozen=True)
class Peer:
    key: str  # what --peers names
    label: str  # the table's row
    script: str  # in bench/peers/, run as SCRIPT MODEL CALIBRATION OUTPUT [*args]
    args: tuple[str, ...] = ()
    venv: str | None = None  # bench/.venvs/<venv>; None: Pareto's own interpreter
    installs: tuple[tuple[str, ...], ...] = ()  # pip install calls, in order
    shown: tuple[str, ...] = ()  # packages whose installed versions the run reports


PEERS = [
    Peer("ort-dynamic", "ort quantize_dynamic defaults", "ort_int8.py", ("--mode", "dynamic")),
    Peer("ort-static", "ort quantize_static defaults", "ort_int8.py", ("--mode", "static")),
    # torch first, pinned to the version whose CPU wheel pip finds on local disk here (else: a multi-GB CUDA build)
    Peer("olive", "Olive OnnxQuantization", "olive_int8.py", venv="olive",
         installs=(("torch==2.13.0",), ("olive-ai==0.13.0", *ORT_PINS, "requests==2.34.2")),  # requests: undeclared
         shown=("olive-ai", "onnxruntime", "onnx", "torch", "numpy")),
    Peer("nncf", "NNCF nncf.quantize", "nncf_int8.py", venv="nncf",
         installs=(("nncf==3.4.0", *ORT_PINS),), shown=("nncf", "onnxruntime", "onnx", "numpy")),
    # the same, with the one option NNCF's documentation gives for transformer models (same environment)
    Peer("nncf-transformer", "NNCF model_type=TRANSFORMER", "nncf_int8.py", ("--model-type", "transformer"),
         venv="nncf", installs=(("nncf==3.4.0", *ORT_PINS),), shown=("nncf", "onnxruntime", "onnx", "numpy")),
    # 3.7.1 is the last neural-compressor with an ONNX Runtime backend (3.8 on ships only torch, tf, jax); it still
    # calls onnx.mapping, gone from onnx 1.19, and imports six without declaring it
    Peer("inc", "Neural Compressor fit", "inc_int8.py", venv="inc",
         installs=(("neural-compressor==3.7.1", "onnx==1.18.0", "onnxruntime==1.32.0", "six==1.17.0"),),
         shown=("neural-compressor", "onnxruntime", "onnx", "numpy")),
]


class PeerFailed(Exception):
    """A peer that could not be installed or run; the message is what the table shows."""


@dataclass
class Outcome:
    label: str
    row: Row | None = None
    form: str = ""  # what the int8 graph is: QDQ, QOperator, dynamic
    error: str | None = None
    path: Path | None = None  # the measured file, for later rounds


# -- peer environments -----------------------------------------------------------------------------
def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:400]


def _pip(python: Path, requirements: tuple[str, ...], log: Path) -> None:
    cmd = [str(python), "-m", "pip", "install", *requirements]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise PeerFailed(f"pip install {' '.join(requirements)} took over {INSTALL_TIMEOUT_S} s") from e
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{done.stdout}\n{done.stderr}\n")
    if done.returncode != 0:
        raise PeerFailed(f"pip install {' '.join(requirements)} failed: {_last_line(done.stderr)} (log: {log})")


def _versions(python: Path, names: tuple[str, ...]) -> dict[str, str]:
    done = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True)
    installed = {re.sub(r"[-_.]+", "-", p["name"].lower()): p["version"] for p in json.loads(done.stdout or "[]")}
    return {n: installed.get(n, "?") for n in names}


def environment(peer: Peer) -> tuple[Path, str]:
    """The interpreter to run `peer` with, and what was installed (or reused) for it."""
    if peer.venv is None:
        import onnxruntime

        return Path(sys.executable), f"Pareto's own environment (onnxruntime {onnxruntime.__version__})"
    folder = VENVS / peer.venv
    python, marker = folder / "bin" / "python", folder / "pareto-peer.json"
    wanted = [list(call) for call in peer.installs]
    if marker.exists() and python.exists():
        recorded = json.loads(marker.read_text())
        if recorded.get("installs") == wanted:
            return python, f"reused {folder.relative_to(BENCH.parent)}: {_shown(recorded['versions'])}"
    interpreter = shutil.which("python3.11")
    if interpreter is None:
        raise PeerFailed("python3.11 is not on PATH, so its virtual environment cannot be made")
    print(f"  installing {peer.key} into {folder} ...", flush=True)
    if not python.exists():
        subprocess.run([interpreter, "-m", "venv", str(folder)], check=True, capture_output=True)
    for call in peer.installs:
        _pip(python, call, folder / "install.log")
    versions = _versions(python, peer.shown)
    marker.write_text(json.dumps({"installs": wanted, "versions": versions}, indent=1))
    pins = "; ".join("pip install " + " ".join(call) for call in peer.installs)
    return python, f"installed into {folder.relative_to(BENCH.parent)} ({pins}): {_shown(versions)}"


def _shown(versions: dict[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())


# -- running a peer --------------------------------------------------------------------------------
def run_peer(peer: Peer, python: Path, ref: Reference, calibration: Path, output: Path) -> float:
    """Runs the peer's default int8 flow on the reference model; returns the seconds it took."""
    work = output.parent / f"work-{peer.key}"  # tools that write caches into the working folder write here
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    output.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OLIVE_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [str(python), str(SCRIPTS / peer.script), str(ref.onnx), str(calibration), str(output), *peer.args]
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=work)
    except subprocess.TimeoutExpired as e:
        raise PeerFailed(f"did not finish within {RUN_TIMEOUT_S} s") from e
    log = output.with_suffix(".log")
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n")
    if done.returncode != 0:
        raise PeerFailed(f"{_last_line(done.stderr or done.stdout)} (exit {done.returncode}; log: {log})")
    if not output.exists():
        raise PeerFailed(f"exited 0 but wrote no model (log: {log})")
    return time.monotonic() - start


def int8_form(path: Path) -> str:
    """What kind of int8 graph a file holds, from its operators."""
    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise PeerFailed("the output keeps weights in external files; its size would be understated")
    ops = Counter(n.op_type for n in model.graph.node)
    if ops["QLinearConv"] or ops["QLinearMatMul"]:
        return "QOperator"
    if ops["DynamicQuantizeLinear"] or ops["MatMulInteger"] or ops["ConvInteger"]:
        return "dynamic" + (" (ConvInteger)" if ops["ConvInteger"] else "")
    if ops["QuantizeLinear"] or ops["DequantizeLinear"]:
        return "QDQ"
    return "float"


def write_calibration(ref: Reference, folder: Path) -> Path:
    """The samples Pareto's static int8 calibrates on (the job's training split, first N), for every peer."""
    recipe = Recipe.model_validate({"steps": PARETO_INT8})
    data = job_data(ref.data, ref.specs, recipe)
    n = Quantize().calibration_samples
    path = folder / "calibration.npz"
    np.savez(path, **{name: values[:n] for name, values in data.train.inputs.items()})
    return path


# -- one model: Pareto and every peer, measured alike ----------------------------------------------
def pareto_int8(ref: Reference, repeats: int, baseline_outputs, folder: Path) -> Outcome:
    """The built-in `int8` recipe through the harness (the service's own step and probe). Its scratch folder
    is pointed into `folder` so that the chosen file can be named, and measured again in later rounds."""
    scratch = folder / "pareto-work"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    saved, tempfile.tempdir = tempfile.tempdir, str(scratch)
    try:
        row, _ = measure_chain(ref, "Pareto int8 (recipe int8)", PARETO_INT8, BATCHES, repeats, baseline_outputs)
    finally:
        tempfile.tempdir = saved
    chosen = [p for p in scratch.glob("bench-*/s1/auto-*.onnx") if p.stat().st_size == row.size_bytes]
    if len(chosen) != 1:
        return Outcome(row.label, row, "?")
    kept = shutil.copy(chosen[0], folder / "pareto-int8.onnx")
    return Outcome(row.label, row, f"{int8_form(chosen[0])}, auto chose {chosen[0].stem[5:]}", path=Path(kept))


def peer_int8(peer: Peer, env, ref: Reference, calibration: Path, repeats: int, baseline_outputs) -> Outcome:
    if isinstance(env, Exception):
        return Outcome(peer.label, error=f"install: {env}")
    output = calibration.parent / f"{peer.key}.onnx"
    try:
        seconds = run_peer(peer, env[0], ref, calibration, output)
        form = int8_form(output)
        row, _ = measure_onnx(ref, peer.label, output, BATCHES, repeats, baseline_outputs, seconds)
    except Exception as e:  # any failure is a result to report, not a reason to stop
        reason = str(e) if isinstance(e, PeerFailed) else f"{type(e).__name__}: {e}"
        return Outcome(peer.label, error=reason)
    return Outcome(peer.label, row, form, path=output)


def compare(ref: Reference, key: str, peers: list[Peer], envs: dict, repeats: int, rounds: int) -> list[Outcome]:
    folder = OUT / key
    folder.mkdir(parents=True, exist_ok=True)
    calibration = write_calibration(ref, folder)
    baseline, outputs = measure_chain(ref, "fp32 baseline", [], BATCHES, repeats)
    print(f"  measured {ref.name}: fp32 baseline", flush=True)
    outcomes = [Outcome(baseline.label, baseline, "float", path=ref.onnx), pareto_int8(ref, repeats, outputs, folder)]
    print(f"  measured {ref.name}: Pareto int8 ({outcomes[-1].row.seconds:.1f} s to build)", flush=True)
    for peer in peers:
        outcomes.append(peer_int8(peer, envs[peer.key], ref, calibration, repeats, outputs))
        done = outcomes[-1]
        status = f"{done.row.seconds:.1f} s to build" if done.row else f"FAILED: {done.error}"
        print(f"  measured {ref.name}: {peer.label} ({status})", flush=True)
    measured = [o.row for o in outcomes if o.row is not None and o.path is not None]
    for o in outcomes:
        if o.row is not None and o.path is not None:
            o.row.path = o.path
    remeasure(ref, measured, rounds, repeats, BATCHES)
    return outcomes


# -- the table -------------------------------------------------------------------------------------
def shortfalls(pareto: Row, peer: Row) -> list[str]:
    """Where Pareto's candidate is worse than the peer's (empty: Pareto dominates it)."""
    found = []
    if pareto.quality < peer.quality:
        found.append(f"quality {pareto.quality - peer.quality:+.4f}")
    for b in BATCHES:
        mine, theirs = pareto.latency[str(b)], peer.latency[str(b)]
        if mine > theirs:
            noise = " (within run-to-run noise)" if mine / theirs < 1 + NOISE else ""
            found.append(f"p50 b{b} {mine / theirs:.2f}x the peer's ({mine:.3f} vs {theirs:.3f} ms){noise}")
    if pareto.size_bytes > peer.size_bytes:
        extra = (pareto.size_bytes - peer.size_bytes) / 1024
        found.append(f"size {pareto.size_bytes / peer.size_bytes:.3f}x the peer's (+{extra:.1f} KiB)")
    return found


HEADER = (f"{'candidate':31} {'int8 graph':27} {'size/fp32':>9} {'speedup b1':>10} {'speedup b32':>11} {'quality':>8} "
          f"{'p50 b1 ms':>9} {'p50 b32 ms':>10} {'build s':>7} | {'P/peer size':>11} {'P/peer b1':>9} "
          f"{'P/peer b32':>10} {'P-peer qual':>11} {'P dominates':>11}")


def _line(o: Outcome, base: Row, pareto: Row | None, is_peer: bool) -> str:
    if o.row is None:
        return f"{o.label:31} FAILED: {o.error}"
    r = o.row
    speed = [base.latency[str(b)] / r.latency[str(b)] for b in BATCHES]
    line = (f"{o.label:31} {o.form:27} {r.size_bytes / base.size_bytes:9.3f} {speed[0]:10.2f} {speed[1]:11.2f} "
            f"{r.quality:8.4f} {r.latency['1']:9.3f} {r.latency['32']:10.2f} {r.seconds:7.1f} |")
    if not is_peer or pareto is None:
        return line
    ratios = [pareto.latency[str(b)] / r.latency[str(b)] for b in BATCHES]
    dominates = "yes" if not shortfalls(pareto, r) else "no"
    return (f"{line} {pareto.size_bytes / r.size_bytes:11.3f} {ratios[0]:9.2f} {ratios[1]:10.2f} "
            f"{pareto.quality - r.quality:+11.4f} {dominates:>11}")


def table(ref: Reference, outcomes: list[Outcome], rounds: int) -> str:
    base, pareto = outcomes[0].row, outcomes[1].row
    lines = [f"{ref.name} — quality: {ref.quality}; p50: median of {rounds} side-by-side round(s); P = Pareto int8; "
             "ratios < 1 and deltas >= 0 favour Pareto",
             HEADER, "-" * len(HEADER)]
    lines += [_line(o, base, pareto, i >= 2) for i, o in enumerate(outcomes)]
    for o in outcomes[2:]:
        if o.row and pareto and shortfalls(pareto, o.row):
            lines.append(f"  Pareto does not dominate {o.label}: {'; '.join(shortfalls(pareto, o.row))}")
    return "\n".join(lines)


def prepared(peer: Peer):
    """environment(peer), or the exception that stopped it (reported in the table)."""
    try:
        env = environment(peer)
    except Exception as e:
        print(f"  {peer.key}: FAILED to install: {e}", flush=True)
        return e
    print(f"  {peer.key}: {env[1]}", flush=True)
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, help=f"timed runs per batch size in a round (default {REPEATS})")
    ap.add_argument("--rounds", type=int, help=f"side-by-side rounds, p50 = the median round's (default {ROUNDS})")
    ap.add_argument("--only", choices=["cnn", "minilm"])
    ap.add_argument("--peers", default=",".join(p.key for p in PEERS),
                    help=f"comma-separated, from: {', '.join(p.key for p in PEERS)}")
    args = ap.parse_args()
    unknown = set(args.peers.split(",")) - {p.key for p in PEERS}
    if unknown:
        ap.error(f"unknown peers {sorted(unknown)}; known: {[p.key for p in PEERS]}")
    peers = [p for p in PEERS if p.key in args.peers.split(",")]
    envs = {peer.key: prepared(peer) for peer in peers}
    tables = []
    for key, build in (("cnn", digits_cnn), ("minilm", minilm)):
        if args.only in (None, key):
            ref, rounds = build(), args.rounds or ROUNDS[key]
            repeats = args.repeats or REPEATS[key]
            tables.append(table(ref, compare(ref, key, peers, envs, repeats, rounds), rounds))
            print("\n" + tables[-1] + "\n", flush=True)
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
