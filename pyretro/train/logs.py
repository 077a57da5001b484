"""Training logs: metrics JSONL (+ optional TensorBoard), a tqdm progress bar, a loss-curve PNG."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON object per record to ``metrics.jsonl``; mirrors scalars to TensorBoard if asked.

    On resume the file is truncated to the records before the resumed step, so a killed-and-resumed run
    has the same metrics file as an uninterrupted one (apart from timings).
    """

    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = False, resume_step: int | None = None,
                 enabled: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            keep = [line for line in self.path.read_text().splitlines()
                    if line.strip() and _step_of(line) <= resume_step]
            tmp = self.path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(f"{line}\n" for line in keep))
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.is_file():
            self.path.unlink()  # a fresh run in an existing directory starts a fresh log
        self._f = open(self.path, "a")  # noqa: SIM115 (kept open for the run)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("train.tensorboard = true needs the tensorboard package "
                                  "(pip install tensorboard)") from e
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        if self.tb is not None:
            step = int(record.get("step", 0))
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._f.close()
        if self.tb is not None:
            self.tb.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", -1))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # an unreadable (half-written) line is dropped


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
    return out


class Progress:
    """tqdm bar over optimizer steps showing loss, tokens/s and ETA (tqdm's own); silent when disabled."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str = "train") -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)

    def update(self, loss: float, tokens_per_s: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
            self.bar.update(1)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plot_losses(metrics_path: str | os.PathLike, png_path: str | os.PathLike) -> Path | None:
    """Train loss per step and validation losses per eval as a PNG (matplotlib, Agg). None without data."""
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and _finite(r.get("loss"))]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(*zip(*train, strict=True), lw=1.0, label="train")
    val_keys = sorted({k for r in records if r.get("kind") == "val" for k in r if k.endswith("/loss")})
    for k in val_keys:
        pts = [(r["step"], r[k]) for r in records if r.get("kind") == "val" and _finite(r.get(k))]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1.2, label=k.removesuffix("/loss"))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(png_path)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


__all__ = ["MetricsLogger", "Progress", "plot_losses", "read_metrics"]
