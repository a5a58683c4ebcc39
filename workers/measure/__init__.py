"""Measurement: every model measured the same way on the target (a probe process), counted from the file,
compared with the baseline; goals, variants timed side by side, per-layer sensitivity."""
