"""What the commands print for a person at a terminal: lines that fit it, and short summaries
whose long versions are in MLflow or behind a flag. Imports nothing heavy (`tabslim --help`)."""

from __future__ import annotations

import re
import textwrap

__all__ = ["TERMINAL_COLUMNS", "fit", "train_summary", "worker_state"]

# A terminal's width: lines past it wrap mid-word in most of them.
TERMINAL_COLUMNS = 120
# Primary metrics, as `lightning_modules.task.Task.metric` names them, first found first.
_PRIMARY = ("accuracy", "rmse", "pr_auc")
_LATENCY = re.compile(r"^latency_onnxruntime_b(\d+)_median_ms$")


def fit(text: str, width: int = TERMINAL_COLUMNS) -> str:
    """`text` with each line longer than `width` wrapped at spaces, its continuation indented
    under the line's own indent by four more."""
    lines = []
    for line in text.splitlines():
        if len(line) <= width:
            lines.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()))
        lines += textwrap.wrap(
            line.strip(),
            width,
            initial_indent=indent,
            subsequent_indent=indent + "    ",
            break_on_hyphens=False,
            break_long_words=False,
        )
    return "\n".join(lines)


def _number(value: float, spec: str = ".4g") -> str:
    # + 0.0 turns -0.0 into 0.0: "-0" reads as a loss where there is none.
    return f"{value + 0.0:{spec}}"


def train_summary(metrics: dict[str, float]) -> list[str]:
    """The few figures a person reads after `tabslim train`: the primary metric on validation
    and test, the size, and the served latency."""
    lines = []
    primary = next((m for m in _PRIMARY if f"val_{m}" in metrics), None)
    if primary is not None:
        test = metrics.get(f"test_{primary}")
        said = f"  validation {primary} {_number(metrics[f'val_{primary}'])}"
        said += f", test {primary} {_number(test)}" if test is not None else ""
        if "epochs" in metrics:
            said += f" ({int(metrics['epochs'])} epochs"
            best = metrics.get("best_epoch")
            said += f", best at {int(best)})" if best is not None else ")"
        lines.append(said)
    size = [
        f"{int(metrics[key]):,} {name}"
        for key, name in (("parameters", "parameters"), ("size_bytes", "bytes"), ("flops", "FLOPs"))
        if key in metrics
    ]
    if size:
        lines.append(f"  size: {', '.join(size)}")
    latency = sorted(
        (int(m[1]), value) for key, value in metrics.items() if (m := _LATENCY.match(key))
    )
    if latency:
        shown = ", ".join(f"{_number(v, '.3g')} ms at batch {b}" for b, v in latency)
        lines.append(f"  latency (ONNX Runtime, median): {shown}")
    return lines


def worker_state(complete: int, target: int) -> str:
    """Where a study stands when a worker stops: `complete` searched trials of the `target`
    the latest search asked for (an earlier search may have asked for more)."""
    if complete < target:
        return f"the study has {complete} of its {target} trials complete"
    more = f" ({complete} complete: an earlier search asked for more)" if complete > target else ""
    return f"the study has the {target} trials its latest search asked for{more}"
