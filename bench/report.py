"""The results: a markdown table (with the machine it ran on), JSON, and a PNG chart."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory and tool versions of this machine."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))

    def version(*argv: str) -> str:
        result = subprocess.run(argv, capture_output=True, text=True)
        return (result.stdout or result.stderr).strip().splitlines()[0]

    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "git": version("git", "--version"),
            "openssh": version("ssh", "-V"), "python": platform.python_version()}


NONE = "-"  # a cell with no figure (no OpenSSH counterpart)


def _fmt(value: float, unit: str) -> str:
    if value != value:  # NaN: no OpenSSH counterpart
        return NONE
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "×":
        return f"{value:.2f}×"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def table(rows: list[Any], meta: dict[str, Any]) -> str:
    """The markdown the README shows."""
    lines = [f"Measured {meta['date']} ({meta['profile']} profile, {meta['elapsed_s']:.0f} s end to end) on "
             f"{meta['nproc']} CPUs ({meta['cpu']}), {meta['memory_gb']} GB RAM; {meta['git']}, "
             f"{meta['openssh']}. Repositories: "
             + ", ".join(f"{k} {v} MB" for k, v in meta["repos_mb"].items()) + ". "
             + "Negotiated by default (kex, cipher): "
             + "; ".join(f"{k}: {v}" for k, v in meta.get("negotiated", {}).items()) + ".",
             "",
             f"OpenSSH baseline login: {meta.get('baseline_login', 'unknown')}. Server CPU: each SSH "
             "daemon runs under a subreaper (bench/reaper.py, prctl PR_SET_CHILD_SUBREAPER), and a "
             "row is the growth of its process tree's utime+stime+cutime+cstime across the operation "
             "(mean over the runs, 10 ms ticks), so every child is counted; gitserver's API and "
             "pipeline worker are separate processes and not counted. Peak RSS: the summed RSS of "
             "that tree, sampled every 20 ms; its private memory is the same less each process's "
             "file-backed and shared pages (/proc/PID/statm resident - shared). Load average (1 min) at start and end: "
             + " / ".join(f"{x:.1f}" for x in meta.get("loadavg", ())) + ".",
             "",
             "| measurement | gitserver | OpenSSH + git | ratio | target | met |",
             "|---|---:|---:|---:|---|:-:|"]
    for row in rows:
        met = "" if row.passed is None else ("yes" if row.passed else "**no**")
        note = f" ({row.note})" if row.note else ""
        lines.append(f"| {row.metric}{note} | {_fmt(row.gitserver, row.unit)} | {_fmt(row.openssh, row.unit)} "
                     f"| {NONE if row.ratio != row.ratio else f'{row.ratio:.2f}'} | {row.target} | {met} |")
    return "\n".join(lines) + "\n"


BASELINE_NOTE_PREFIX = "baseline:"


def chart(rows: list[Any], path: Path, title: str) -> bool:
    """Bar chart of the ratios (gitserver / OpenSSH). Needs the optional ``bench`` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (./dev setup installs it); no chart written")
        return False
    # Rows against another baseline (backup vs tar) are in the table only: their ratios are on
    # another scale and would flatten the OpenSSH comparisons; rows with no OpenSSH figure too.
    shown = [r for r in rows if r.unit == "s" and not r.note.startswith(BASELINE_NOTE_PREFIX)
             and r.ratio == r.ratio]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(shown) + 1.5))
    colours = ["#999999" if r.passed is None else ("#2a9d4b" if r.passed else "#d1495b") for r in shown]
    ax.barh([r.metric for r in shown], [r.ratio for r in shown], color=colours)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("time ratio gitserver / OpenSSH + git (lower is better; 1.0 = same)")
    ax.set_title(title, fontsize=9)
    for i, r in enumerate(shown):
        ax.text(r.ratio, i, f" {r.ratio:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(out: Path, rows: list[Any], meta: dict[str, Any]) -> dict[str, Path]:
    """Write latest.md, latest.json, latest.png and readme-section.md (the README's copy)."""
    out.mkdir(parents=True, exist_ok=True)
    md = table(rows, meta)
    paths = {"md": out / "latest.md", "json": out / "latest.json"}
    paths["md"].write_text("# gitserver vs OpenSSH + git\n\n" + md)
    paths["json"].write_text(json.dumps({"meta": meta, "rows": [dataclasses.asdict(r) | {"ratio": r.ratio}
                                                               for r in rows]}, indent=2) + "\n")
    readme = out / "readme-section.md"
    readme.write_text(md + "\n![ratios](bench/results/latest.png)\n")
    paths["readme"] = readme
    png = out / "latest.png"
    if chart(rows, png, f"gitserver vs OpenSSH + git — {meta['date']}, {meta['nproc']} CPUs"):
        paths["png"] = png
    return paths


def publish(paths: dict[str, Path], published: Path, meta: dict[str, Any]) -> dict[str, Path]:
    """Copy a run's md, json and png into ``published`` twice: as ``latest.*`` (what the README
    shows) and as ``<date>-<profile>.*``, which is never overwritten by a later run."""
    stamp = meta["date"].replace(" UTC", "").replace(" ", "-").replace(":", "")
    out = {}
    for kind in ("md", "json", "png"):
        if kind in paths:
            dated = published / f"{stamp}-{meta['profile']}.{kind}"
            shutil.copyfile(paths[kind], published / f"latest.{kind}")
            shutil.copyfile(paths[kind], dated)
            out[f"published_{kind}"] = dated
    return out
