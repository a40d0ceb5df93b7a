"""The run report: ``report.json`` (a public contract), ``report.md`` and a terminal table."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from optiforge.files import atomic_write_text
from optiforge.version import __version__

CONTRACT_KEYS = (
    "stage",
    "metric",
    "value",
    "params",
    "nonzero_params",
    "size_bytes",
    "latency_ms",
    "throughput_per_s",
    "peak_memory_bytes",
    "seconds",
    "artifact",
)


def environment(device: torch.device) -> dict:
    return {
        "torch": torch.__version__.split("+")[0],
        "device": device.type,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "optiforge": __version__,
    }


def human_bytes(size: float | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def form_label(deployment: dict | None) -> str:
    """A row's deployment form in a few words: ``torch compiled int8 ×2``, ``onnxruntime fp32 ×1``."""
    if not deployment:
        return "-"
    compiled = "compiled" if deployment.get("compiled") else ""
    autocast = "autocast" if deployment.get("autocast") else ""
    parts = [deployment.get("engine", ""), compiled, autocast, deployment.get("precision", "")]
    return " ".join(part for part in parts if part) + f" ×{deployment.get('threads', '?')}"


def _rows(report: dict) -> list[list[str]]:
    rows = []
    first_size = next((row["size_bytes"] for row in report["stages"] if row.get("size_bytes")), None)
    for row in report["stages"]:
        value = row.get("value")
        ratio = f"{first_size / row['size_bytes']:.1f}×" if first_size and row.get("size_bytes") else "-"
        rows.append(
            [
                row["stage"],
                form_label(row.get("deployment")),
                f"{row['metric']} {value:.4f}" if value is not None else "-",
                f"{row['params']:,}",
                f"{row['nonzero_params']:,}",
                human_bytes(row.get("size_bytes")),
                ratio,
                f"{row['latency_ms']['p50']:.3f}",
                f"{row['throughput_per_s']:,.0f}",
                human_bytes(row.get("peak_memory_bytes")),
                f"{row['seconds']:.1f}",
            ]
        )
    return rows


HEADERS = [
    "stage",
    "form",
    "metric",
    "params",
    "non-zero",
    "size",
    "smaller",
    "latency p50 ms",
    "samples/s",
    "peak mem",
    "s",
]


def print_table(report: dict, console: Console | None = None) -> None:
    table = Table(title=f"optiforge · {report['recipe']} · {report['environment']['device']}")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("stage", "form") else "right")
    for row in _rows(report):
        table.add_row(*row)
    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(table)


def markdown(report: dict) -> str:
    lines = [f"# optiforge report: {report['recipe']}", ""]
    env = report["environment"]
    lines.append(f"torch {env['torch']} · device {env['device']} · {env['threads']} threads · {env['platform']}")
    lines += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    for row in report["stages"]:
        hidden = ("metrics", "deployment")  # the deployment form has its column
        extra = {
            key: value
            for key, value in row.items()
            if key not in CONTRACT_KEYS and key not in hidden and value is not None  # unset: nothing to say
        }
        if extra:
            lines += ["", f"**{row['stage']}**: " + ", ".join(f"{key} = {value}" for key, value in extra.items())]
    if report.get("exports"):
        lines += ["", "## Exports", ""] + [
            f"- {item['format']}: `{item['artifact']}` ({human_bytes(item['size_bytes'])})"
            for item in report["exports"]
        ]
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(plot).stem}]({plot})" for plot in report["plots"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict, run_dir: Path) -> None:
    """Write report.json and report.md atomically."""
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(run_dir / "report.md", markdown(report))
