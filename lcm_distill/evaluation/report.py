"""Evaluation reports: the JSON schema, a quality-vs-steps plot, image grids and a Table-1-style markdown table.

The JSON is the contract between the harness, the benchmark and anyone comparing runs later, so it is versioned
and checked by :func:`validate_report` (used by the tests and before every write).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

SCHEMA_VERSION = 1
LATENCY_KEYS = ("text_encoder_s", "unet_s", "vae_decode_s", "other_s", "total_s", "calls")


@dataclass
class ResultRow:
    """Metrics at one (steps, guidance) setting. fid/kid are None when no reference set was given."""

    steps: int
    guidance_scale: float
    omega: float
    num_images: int
    fid: float | None = None
    kid_mean: float | None = None
    kid_std: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    latency: dict = field(default_factory=dict)
    grid: str | None = None


@dataclass
class EvalReport:
    """Everything needed to reproduce and compare one evaluation run."""

    model: str
    kind: str
    pipeline: str
    scheduler: str
    timestep_spacing: str | None
    seed: int
    image_size: list[int]
    device: str
    dtype: str
    feature_extractor: str | None
    reference: dict | None
    scorers: list[str]
    results: list[ResultRow] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION
    # how the model uses guidance_scale: "omega-embedded" (LCM student with the omega input: omega = g - 1 embedded),
    # "cfg" (a second, unconditional pass: teachers), "unused" (no omega input and no CFG, e.g. a merged LCM-LoRA:
    # rows are recorded at g = 1, never at a value the model ignored); "+cfg" when real CFG (cfg_scale > 1) was on
    guidance_mode: str = "unknown"

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        data = self.to_dict()
        validate_report(data)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n")
        return path


_TOP = {"schema_version": int, "model": str, "kind": str, "pipeline": str, "scheduler": str, "seed": int,
        "image_size": list, "device": str, "dtype": str, "scorers": list, "results": list, "versions": dict,
        "created": str}
_ROW = {"steps": int, "guidance_scale": float, "omega": float, "num_images": int, "scores": dict, "latency": dict}
_OPTIONAL_FLOATS = ("fid", "kid_mean", "kid_std")


def validate_report(data: dict) -> None:
    """Raise ValueError naming the first key that is missing or of the wrong type."""
    for key, typ in _TOP.items():
        if key not in data:
            raise ValueError(f"report is missing key {key!r}")
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            raise ValueError(f"report key {key!r} should be {typ.__name__}, got {type(data[key]).__name__}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"schema_version {data['schema_version']} != {SCHEMA_VERSION}")
    for i, row in enumerate(data["results"]):
        for key, typ in _ROW.items():
            if key not in row:
                raise ValueError(f"results[{i}] is missing key {key!r}")
            ok = isinstance(row[key], (int, float)) if typ is float else isinstance(row[key], typ)
            if not ok:
                raise ValueError(f"results[{i}][{key!r}] should be {typ.__name__}, got {type(row[key]).__name__}")
        for key in _OPTIONAL_FLOATS:
            if row.get(key) is not None and not isinstance(row[key], (int, float)):
                raise ValueError(f"results[{i}][{key!r}] should be a number or null")
        missing = [k for k in LATENCY_KEYS if row["latency"] and k not in row["latency"]]
        if missing:
            raise ValueError(f"results[{i}]['latency'] is missing {missing}")


def load_report(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text())
    validate_report(data)
    return data


def _label(report: dict) -> str:
    return f"{Path(report['model']).name} ({report['kind']})"


def plot_quality_vs_steps(reports: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """One panel per metric (FID, then each prompt score), x = steps (log2), one line per run and guidance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = []
    if any(r.get("fid") is not None for rep in reports for r in rep["results"]):
        metrics.append("fid")
    for rep in reports:
        for r in rep["results"]:
            metrics += [k for k in r["scores"] if k not in metrics]
    metrics = metrics or ["latency"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for rep in reports:
            for g in sorted({r["guidance_scale"] for r in rep["results"]}):
                rows = sorted((r for r in rep["results"] if r["guidance_scale"] == g), key=lambda r: r["steps"])
                ys = [_metric(r, metric) for r in rows]
                ax.plot([r["steps"] for r in rows], ys, marker="o", label=f"{_label(rep)} g={g:g}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("inference steps")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _metric(row: dict, metric: str) -> float:
    if metric == "fid":
        return math.nan if row.get("fid") is None else row["fid"]
    if metric == "latency":
        return row["latency"].get("total_s", math.nan)
    return row["scores"].get(metric, math.nan)


def save_grid(images: torch.Tensor | Sequence[torch.Tensor], path: str | Path, nrow: int, min_cell: int = 64,
              row_labels: Sequence[str] | None = None) -> Path:
    """Tile (N, 3, H, W) [0, 1] images into a PNG, ``nrow`` images per row; small images are upscaled (nearest)
    to at least ``min_cell`` pixels so 16x16 testbed samples stay visible; optional text label per row."""
    from PIL import Image, ImageDraw

    x = torch.cat(list(images)) if not isinstance(images, torch.Tensor) else images
    n, _, h, w = x.shape
    f = max(1, math.ceil(min_cell / max(h, w)))
    cell_h, cell_w, pad = h * f, w * f, 2
    margin = 70 if row_labels else 0
    rows = math.ceil(n / nrow)
    canvas = Image.new("RGB", (margin + nrow * (cell_w + pad) + pad, rows * (cell_h + pad) + pad), (255, 255, 255))
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        tile = Image.fromarray(np.ascontiguousarray(arr[i])).resize((cell_w, cell_h), Image.NEAREST)
        r, c = divmod(i, nrow)
        canvas.paste(tile, (margin + pad + c * (cell_w + pad), pad + r * (cell_h + pad)))
    if row_labels:
        draw = ImageDraw.Draw(canvas)
        for r, text in enumerate(row_labels[:rows]):
            draw.text((4, pad + r * (cell_h + pad) + cell_h // 2 - 6), text, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def markdown_table(reports: Sequence[dict], metric: str = "fid", guidance_scale: float | None = None) -> str:
    """A Table-1-style markdown table: one row per run (and guidance), one column per step count."""
    steps = sorted({r["steps"] for rep in reports for r in rep["results"]})
    lines = ["| method | g | " + " | ".join(f"{s} step{'s' * (s > 1)}" for s in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for rep in reports:
        for g in sorted({r["guidance_scale"] for r in rep["results"]}):
            if guidance_scale is not None and g != guidance_scale:
                continue
            by_steps = {r["steps"]: r for r in rep["results"] if r["guidance_scale"] == g}
            cells = []
            for s in steps:
                v = _metric(by_steps[s], metric) if s in by_steps else math.nan
                cells.append("-" if math.isnan(v) else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}")
            lines.append(f"| {_label(rep)} | {g:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
