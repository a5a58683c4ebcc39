"""report.json and report.html from what was measured."""
