"""report.html: one self-contained page (inline CSS, plots as inline SVG, no network) a person decides
from: quality against latency and against size with the frontier drawn, every candidate with its
lineage, deltas and goals, regressions in red, and the environment the numbers were measured in."""

from __future__ import annotations

import html
import io

from core.report import Candidate, Report
from workers.measure import goals as G

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}tr.recommended{background:#e9f7e9;font-weight:600}
tr.regression td.lat{background:#fde2e2;color:#a00}.missed{color:#a00}.met{color:#070}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots svg{max-width:640px;height:auto}
.note{color:#555;font-size:.9em}
"""


def _quality(c: Candidate) -> float:
    return G.value(c, "quality") or 0.0


def pyplot():
    """matplotlib, headless (imported on first use: the worker's start-up warm-up does it early)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot(report: Report, x_metric: str, x_label: str, scale: float = 1.0) -> str:
    """quality (y) against x_metric, the frontier joined, the recommended starred; SVG text."""
    plt = pyplot()
    everything = [report.baseline, *report.candidates]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    fig.subplots_adjust(left=0.13, right=0.97, top=0.97, bottom=0.12)  # fixed margins: one draw, not two
    xs = [(G.value(c, x_metric) or 0.0) * scale for c in everything]
    ax.scatter(xs, [_quality(c) for c in everything], c=["#c00" if c.regressions else "#79a" for c in everything],
               s=28, zorder=2, label="candidates")
    frontier = sorted((c for c in everything if c.id in report.frontier), key=lambda c: G.value(c, x_metric) or 0)
    ax.plot([(G.value(c, x_metric) or 0.0) * scale for c in frontier], [_quality(c) for c in frontier], "-o",
            color="#2a7", zorder=3, label="frontier")
    best = next(c for c in everything if c.id == report.recommended)
    ax.scatter([(G.value(best, x_metric) or 0.0) * scale], [_quality(best)], marker="*", s=260, color="#e90",
               zorder=4, label=f"recommended ({best.id})")
    for c, x in zip(everything, xs, strict=True):
        ax.annotate(c.id, (x, _quality(c)), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(x_label)
    ax.set_ylabel("quality (" + (next(iter(report.baseline.metrics.quality), "fidelity cosine")) + ")")
    ax.margins(x=0.1, y=0.1)  # room for the labels beside the outermost points
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _cell(value, fmt: str = "{}", cls: str = "") -> str:
    text = "-" if value is None else fmt.format(value)
    return f'<td class="{cls}">{html.escape(text)}</td>'


def _row(c: Candidate, report: Report, batches: list[str]) -> str:
    m, vs = c.metrics, c.vs_baseline
    classes = " ".join(x for x in ("recommended" if c.id == report.recommended else "",
                                   "regression" if c.regressions else "") if x)
    steps = " → ".join(next(iter(s)) for s in c.steps) or "(input model)"
    quality = ", ".join(f"{k} {v:.4f}" for k, v in m.quality.items()) or "-"
    goals = "".join(f'<span class="{"met" if r.met else "missed"}">{html.escape(r.metric)} '
                    f'{"✓" if r.met else "✗ gap " + format(r.gap or 0, ".4g")}</span><br>' for r in c.goals)
    cells = [f'<td class="l">{html.escape(c.id)}</td>', f'<td class="l">{html.escape(c.parent_id or "")}</td>',
             f'<td class="l">{html.escape(steps)}</td>', _cell(m.size_bytes / 1e6, "{:.3f}"),
             _cell(1 / vs.size_ratio if vs and vs.size_ratio else None, "{:.2f}")]
    cells += [_cell(m.latency_ms[b].p50 if b in m.latency_ms else None, "{:.3f}", "lat") for b in batches]
    cells += [_cell(vs.speedup if vs else None, "{:.2f}", "lat"), f'<td class="l">{html.escape(quality)}</td>',
              _cell(m.fidelity.cosine if m.fidelity else None, "{:.5f}"), _cell(m.macs, "{:,}"),
              _cell(m.params, "{:,}"), f'<td class="l">{goals or "-"}</td>',
              f'<td class="l">{html.escape("; ".join(c.regressions + c.notes))}</td>']
    return f'<tr class="{classes}">{"".join(cells)}</tr>'


def _profiles(report: Report) -> str:
    """Per operator type, the baseline's time beside each profiled candidate's, and each candidate's causes
    (a regression's in red)."""
    profiled = [c for c in report.candidates if c.profile]
    base = report.baseline.profile
    if base is None or not profiled:
        return ""
    ops = list(dict.fromkeys([o.op for o in base.ops] + [o.op for c in profiled for o in c.profile.ops]))
    times = {c.id: {o.op: (o.nodes, o.ms) for o in c.profile.ops} for c in [report.baseline, *profiled]}
    totals = {c.id: sum(ms for _, ms in times[c.id].values()) for c in [report.baseline, *profiled]}
    ops = sorted(ops, key=lambda op: -max(times[k].get(op, (0, 0.0))[1] for k in times))[:15]
    head = "".join(f"<th>{html.escape(k)} ms (nodes)</th>" for k in times)
    rows = "".join(f'<tr class="op"><td class="l">{html.escape(op)}</td>' + "".join(
        _cell(f"{times[k][op][1]:.3f} ({times[k][op][0]})" if op in times[k] else None) for k in times) + "</tr>"
        for op in ops)
    rows += ('<tr class="op"><td class="l"><b>all nodes</b></td>'
             + "".join(_cell(totals[k], "{:.3f}") for k in times) + "</tr>")
    causes = "".join(f'<li{" class=missed" if c.regressions else ""}><b>{html.escape(c.id)}</b>'
                     f'{" (slower than the baseline)" if c.regressions else ""}: '
                     f'{html.escape("; ".join(c.profile.causes) or "no difference worth naming")}</li>'
                     for c in profiled)
    return (f"<h2>Where the time goes</h2><p class=note>onnxruntime's profiler, batch {base.batch}, mean of "
            f"{base.runs} runs after a warm-up; kernel time per operator type as onnxruntime ran it.</p>"
            f'<table><tr class="op"><th class="l">operator</th>{head}</tr>{rows}</table><ul>{causes}</ul>')


def _decisions(report: Report) -> str:
    """What each candidate's steps weighed (quantize auto's variants), one row per option, the chosen in bold."""
    weighed = [c for c in report.candidates if c.decisions]
    if not weighed:
        return ""
    batches = list(dict.fromkeys(b for c in weighed for d in c.decisions for b in d.latency_ms))
    head = "".join(f"<th>p50 ms b{b}</th>" for b in batches)
    rows = "".join(
        f'<tr class="decision{" recommended" if d.chosen else ""}"><td class="l">{html.escape(c.id)}</td>'
        f'<td class="l">{html.escape(d.step)}: {html.escape(d.option)}</td>'
        + _cell(d.size_bytes / 1e6 if d.size_bytes else None, "{:.3f}")
        + "".join(_cell(d.latency_ms.get(b), "{:.3f}") for b in batches)
        + _cell(d.fidelity, "{:.4f}") + f'<td class="l">{"chosen: " if d.chosen else ""}{html.escape(d.why)}</td></tr>'
        for c in weighed for d in c.decisions)
    return (f'<h2>What the steps weighed</h2><table><tr class="decision"><th class="l">candidate</th>'
            f'<th class="l">option</th><th>size MB</th>{head}<th>fidelity</th><th class="l">taken or why not</th></tr>'
            f"{rows}</table>")


def verdict(report: Report) -> str:
    """What to deploy and why, in one sentence."""
    if report.recommended == report.baseline.id:
        why = "; ".join(report.why_baseline) or "no candidate beat it"
        return f"Keep the uploaded model: {why}."
    best = next(c for c in report.candidates if c.id == report.recommended)
    vs, fid = best.vs_baseline, best.metrics.fidelity
    said = []
    if vs and vs.size_ratio:
        said.append(f"{1 / vs.size_ratio:.1f}x smaller" if vs.size_ratio < 1 else f"{vs.size_ratio:.2f}x the size")
    if vs and vs.speedup:
        said.append(f"{vs.speedup:.2f}x {'faster' if vs.speedup >= 1 else 'the speed'} at batch "
                    f"{report.measurement.batch_sizes[0]}")
    if fid:
        said.append(f"fidelity {fid.top1_agreement if fid.top1_agreement is not None else fid.cosine:.4f}")
    goals = "it meets the recipe's goals" if report.goals_met else "closest to the recipe's goals, which it misses"
    return f"Deploy {best.id} (model.onnx): {', '.join(said)}; {goals}."


def render(report: Report, title: str = "") -> str:
    batches = [str(b) for b in report.measurement.batch_sizes]
    head = ["candidate", "parent", "steps", "size MB", "x smaller", *[f"p50 ms b{b}" for b in batches], "speedup",
            "quality", "fidelity cos", "MACs", "params", "goals", "regressions / notes"]
    rows = "".join(_row(c, report, batches) for c in [report.baseline, *report.candidates])
    env, meas = report.environment, report.measurement
    versions = ", ".join(f"{k} {v}" for k, v in env.versions.items())
    failures = "".join(f"<li>{html.escape(f.id)} ({html.escape(' → '.join(next(iter(s)) for s in f.steps))}): "
                       f"{html.escape(f.code)}: {html.escape(f.message)}</li>" for f in report.failures)
    search = report.search.model_dump() if report.search else None
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Pareto report {html.escape(report.job_id)}</title>
<style>{CSS}</style></head><body>
<h1>Pareto report {html.escape(title or report.job_id)}</h1>
<p class="verdict"><b>{html.escape(verdict(report))}</b></p>
<p>Recommended: <b>{html.escape(report.recommended)}</b> — goals {"met" if report.goals_met else
    '<span class="missed">not met (best so far shown)</span>'}. Frontier: {html.escape(", ".join(report.frontier))}.
{"<br><b class=missed>Slower than the baseline: " + html.escape(", ".join(report.regressions)) + "</b>"
    if report.regressions else ""}
{"<br><b>Nothing beat the uploaded model; keep it.</b> " + html.escape("; ".join(report.why_baseline))
    if report.why_baseline else ""}
{"<br>Import: " + html.escape("; ".join(report.normalization.notes)) if report.normalization and
    report.normalization.notes else ""}</p>
<div class="plots">{_plot(report, "latency_p50_ms", f"p50 latency, batch {batches[0]} (ms)")}
{_plot(report, "size_bytes", "size (MB)", 1e-6)}</div>
<h2>Candidates</h2><table><tr>{"".join(f'<th class="l">{h}</th>' if i < 3 else f"<th>{h}</th>"
                                      for i, h in enumerate(head))}</tr>{rows}</table>
{_decisions(report)}
{_profiles(report)}
{"<h2>Failed candidates</h2><ul>" + failures + "</ul>" if failures else ""}
{"<h2>Search</h2><p>" + html.escape(str(search)) + "</p>" if search else ""}
<h2>Environment</h2><p>CPU: {html.escape(env.cpu)}; GPU: {html.escape(env.gpu or "none")}<br>
Runtimes: {html.escape(versions)}<br>
Measured on {html.escape(meas.device)} with {html.escape(", ".join(meas.providers))},
{meas.threads} intra-op threads, {meas.warmup} warm-up and {meas.repeats} timed runs per batch size;
{meas.samples} evaluation samples ({html.escape(meas.inputs)}){f", {meas.train_samples} training samples"
    if meas.train_samples else ""}.</p>
<p class="note">Every number was measured by the worker that ran the job. Regressions (slower than the baseline
on this target) are in red.</p></body></html>"""
