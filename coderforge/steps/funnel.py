"""The data funnel: documents and bytes per curation step and drop reason, from the steps' ledgers.

``funnel_from_summaries([...ledger.json dicts in step order])`` → a table; ``funnel_metrics`` →
flat MLflow metrics (``funnel.<step>.docs_kept``, ``funnel.<step>.drop.<reason>`` …);
``plot_funnel`` → a PNG (kept documents per step as bars, drops stacked by reason);
``write_funnel(out_dir, summaries, run)`` does all three and logs them to ``run``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from coderforge import storage


def funnel_from_summaries(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in summaries:
        rows.append({
            "step": s["step"], "in": s["in"], "kept": s["kept"], "dropped": s["dropped"],
            "quarantined": s["quarantined"], "bytes_in": s.get("bytes_in", 0), "bytes_kept": s.get("bytes_kept", 0),
            "reasons": dict(s.get("reasons", {})), "fixed": s.get("fixed", 0),
        })
    return rows


def funnel_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        p = f"funnel.{r['step']}"
        for k in ("in", "kept", "dropped", "quarantined"):
            out[f"{p}.docs_{k}"] = float(r[k])
        out[f"{p}.bytes_in"] = float(r["bytes_in"])
        out[f"{p}.bytes_kept"] = float(r["bytes_kept"])
        for reason, n in r["reasons"].items():
            safe = "".join(c if c.isalnum() or c in "_-." else "_" for c in reason)
            out[f"{p}.drop.{safe}"] = float(n)
    if rows and rows[0]["in"]:
        out["funnel.overall_keep_fraction"] = rows[-1]["kept"] / rows[0]["in"]
    return out


def plot_funnel(rows: list[dict[str, Any]], path: str, title: str = "data funnel") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    reasons = sorted({k for r in rows for k in r["reasons"]})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    ax1.bar(steps, [r["kept"] for r in rows], color="#2b7bba", label="kept")
    bottom = [r["kept"] for r in rows]
    cmap = plt.get_cmap("tab20")
    for i, reason in enumerate(reasons):
        vals = [r["reasons"].get(reason, 0) for r in rows]
        ax1.bar(steps, vals, bottom=bottom, color=cmap(i % 20), label=reason)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax1.set_ylabel("documents")
    ax1.set_title(f"{title}: documents")
    ax1.legend(fontsize=7, loc="upper right")
    ax2.plot(steps, [r["bytes_in"] / 1e6 for r in rows], marker="o", label="MB in")
    ax2.plot(steps, [r["bytes_kept"] / 1e6 for r in rows], marker="o", label="MB kept")
    ax2.set_ylabel("MB")
    ax2.set_title(f"{title}: bytes")
    ax2.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_funnel(out_dir: str, summaries: list[dict[str, Any]], run=None) -> dict[str, Any]:
    """Funnel table (``data_funnel.json``), chart (``data_funnel.png``) and MLflow metrics (if ``run``)."""
    rows = funnel_from_summaries(summaries)
    metrics = funnel_metrics(rows)
    os.makedirs(out_dir, exist_ok=True)
    table = os.path.join(out_dir, "data_funnel.json")
    with open(table, "w") as fh:
        json.dump({"steps": rows, "metrics": metrics}, fh, indent=2)
    png = plot_funnel(rows, os.path.join(out_dir, "data_funnel.png"))
    if run is not None:
        run.log_metrics(metrics)
        run.log_artifact(png)
        run.log_artifact(table)
    return {"rows": rows, "metrics": metrics, "png": png, "json": table}


POSTTRAIN_STAGES = ("seeds", "generated", "verified", "deduplicated", "decontaminated")


def posttrain_funnel(reports: dict[str, dict]) -> dict[str, float]:
    """Seeds → generated → verified → deduplicated → decontaminated, from the post-training steps'
    reports (``seeds``' seed count, ``verify``'s ``funnel.*`` metrics); empty when they did not run."""
    seeds, verify = reports.get("seeds", {}).get("metrics", {}), reports.get("verify", {}).get("metrics", {})
    if "seeds" not in seeds and not any(k.startswith("funnel.") for k in verify):
        return {}
    out = {"seeds": seeds.get("seeds")}
    out.update({stage: verify.get(f"funnel.{stage}") for stage in POSTTRAIN_STAGES[1:]})
    return {k: v for k, v in out.items() if v is not None}


def posttrain_languages(reports: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per language: samples verified, passed, pass rate, kept (``verify``'s ``language.<l>.*`` metrics)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in reports.get("verify", {}).get("metrics", {}).items():
        if key.startswith("language."):
            _, language, name = key.split(".", 2)
            out.setdefault(language, {})[name] = value
    return out


def plot_stages(stages: dict[str, float], path: str, title: str) -> str:
    """A bar per stage, labelled with its count (the post-training funnel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(list(stages), list(stages.values()), color="#2b7bba")
    for bar, value in zip(bars, stages.values(), strict=True):
        ax.annotate(f"{value:g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    ax.set_ylabel("records")
    ax.set_title(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summaries_from_dirs(step_dirs: dict[str, str]) -> list[dict[str, Any]]:
    """``{step: out_dir}`` (in order) → their ``ledger.json`` summaries."""
    out = []
    for step, d in step_dirs.items():
        s = json.loads(storage.read_text(storage.join(d, "ledger.json")))
        s["step"] = step
        out.append(s)
    return out
