"""The report as a plain-text table, for terminals and CI logs."""

from __future__ import annotations


def _latency(c: dict, batch: str) -> str:
    lat = c["metrics"]["latency_ms"].get(batch)
    return f"{lat['p50']:.3f}" if lat else "-"


def _quality(c: dict) -> str:
    m = c["metrics"]
    if m["quality"]:
        return ", ".join(f"{k} {v:.4f}" for k, v in m["quality"].items())
    return f"cosine {m['fidelity']['cosine']:.4f}" if m.get("fidelity") else "reference"


def report_table(report: dict) -> str:
    batches = [str(b) for b in report["measurement"]["batch_sizes"]]
    header = ["candidate", "steps", "size", "x smaller", *[f"p50 ms b{b}" for b in batches], "speedup",
              "quality", "goals"]
    rows = []
    for c in [report["baseline"], *report["candidates"]]:
        vs = c.get("vs_baseline") or {}
        mark = " *" if c["id"] == report["recommended"] else ("  " if c["id"] not in report["frontier"] else " f")
        rows.append([
            c["id"] + mark,
            " > ".join(next(iter(s)) for s in c["steps"]) or "-",
            f"{c['metrics']['size_bytes'] / 1e6:.2f} MB",
            f"{1 / vs['size_ratio']:.2f}" if vs.get("size_ratio") else "-",
            *[_latency(c, b) for b in batches],
            f"{vs['speedup']:.2f}" if vs.get("speedup") else "-",
            _quality(c),
            "met" if c["goals_met"] else "MISSED",
        ])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("* recommended   f on the frontier")
    return "\n".join(lines)
