"""The report's table of what the baseline and the champion cost where they are served.

The search's latency ratio is the served graph's; what a user meets adds MLflow's pyfunc
wrapper, or its HTTP server, to both models alike. Printing the three side by side says how
much of the champion's saving survives each way of serving it.
"""

from __future__ import annotations

from collections.abc import Sequence

from search.serving import ServedLatency

__all__ = ["served_lines"]

_HEAD = ("model", "rows", "graph", "in-process", "HTTP")
# A served call this many times its graph's is mostly wrapper: the exported file serves faster.
_WRAPPER_BOUND = 3.0


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _ratio(champion: float | None, baseline: float | None) -> str:
    if champion is None or baseline is None or baseline <= 0:
        return "-"
    return f"{champion / baseline:.2f}x"


def served_lines(latencies: Sequence[ServedLatency], problem: str | None = None) -> list[str]:
    """Per batch size: each model's median ms per call served three ways, then the champion
    over the baseline; and what to serve with where the wrapper dominates."""
    if not latencies:
        return []
    rows: list[tuple[str, ...]] = [_HEAD]
    by = {(t.model, t.rows): t for t in latencies}
    for n in sorted({t.rows for t in latencies}):
        pair = [by[label, n] for label in ("baseline", "champion") if (label, n) in by]
        rows += [(t.model, f"{n:,}", _ms(t.graph_ms), _ms(t.in_process_ms), _ms(t.http_ms))
                 for t in pair]  # fmt: skip
        if len(pair) == 2:
            base, champ = pair
            rows.append(("champion / baseline", f"{n:,}", _ratio(champ.graph_ms, base.graph_ms),
                         _ratio(champ.in_process_ms, base.in_process_ms),
                         _ratio(champ.http_ms, base.http_ms)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEAD))]
    lines = ["served latency per call, median (graph: as the search timed it; in-process: MLflow's",
             "  pyfunc predict; HTTP: mlflow models serve):"]  # fmt: skip
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]  # fmt: skip
    if problem:
        lines.append(f"  HTTP not measured: {problem}")
    elif all(t.http_ms is None for t in latencies):
        lines.append("  HTTP not measured (measure.served: http measures it)")
    worst = max(t.in_process_ms / t.graph_ms for t in latencies if t.graph_ms > 0)
    if worst > _WRAPPER_BOUND:
        lines += [
            f"  a served call costs up to {worst:.0f}x its graph: for the graph's latency, serve",
            "  the file `tabslim export` writes in any ONNX Runtime host",
        ]
    return lines
