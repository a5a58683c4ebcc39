"""The REST gateway. Never imports torch or onnxruntime (tests/test_imports.py holds it to that)."""
