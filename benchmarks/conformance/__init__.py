"""Conformance suite: real public ONNX models shipped inside PyPI wheels, with real inputs.

``models.MODELS`` lists them; ``prepare.prepare(name)`` writes each model's samples to
``data/conformance/<name>/``; ``configs/<name>.json`` are their Pulsar2-style configs.
Run the suite with ``benchmarks/conformance.py`` (or ``make conformance``).
"""
