"""BATCH/summary.tsv, summary.json and index.html: one row per job, read from its run directory.

best, evaluations and seconds (search time) come from the last row of the run's history.jsonl, and strategy and
scorer from its config.json (where `auto` has been made concrete), so the summary says what the run directories say.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

FIELDS = ("target", "strategy", "scorer", "best", "evaluations", "seconds", "status", "attempts", "run", "error")


def last_history_row(run_dir: Path) -> dict[str, Any] | None:
    """The last complete row of RUN/history.jsonl (reads only the file's tail)."""
    path = Path(run_dir) / "history.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            return row
    return None


def _config(run_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        return config if isinstance(config, dict) else {}
    except (OSError, ValueError):
        return {}


def rows(plan: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    out = []
    for job in plan["jobs"]:
        run_dir = Path(folder) / job["run"]
        st = plan["status"].get(job["id"], {})
        config, last = _config(run_dir), last_history_row(run_dir)
        name = lambda key: (config.get(key) or {}).get("name") or job[key]  # noqa: E731
        out.append({
            "id": job["id"], "target": job["target"], "strategy": name("strategy"), "scorer": name("scorer"),
            "best": round(float(last["best"]), 6) if last and last.get("best") is not None else None,
            "evaluations": last["evals"] if last else 0, "seconds": round(float(last["seconds"]), 3) if last else 0.0,
            "status": st.get("status", "pending"), "attempts": st.get("attempts", 0), "run": job["run"],
            "error": st.get("error") or "", "wall_seconds": round(float(st.get("wall_seconds", 0.0)), 3),
            "worker": st.get("worker"),
        })
    return out


def counts(table: list[dict[str, Any]]) -> dict[str, int]:
    c = {s: 0 for s in ("done", "failed", "running", "interrupted", "pending")}
    for r in table:
        c[r["status"]] = c.get(r["status"], 0) + 1
    return c


def write(plan: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    from ..voice import atomic_write_bytes

    folder = Path(folder)
    table = rows(plan, folder)
    tsv = ["\t".join(FIELDS)] + ["\t".join(_cell(r[f]) for f in FIELDS) for r in table]
    atomic_write_bytes(folder / "summary.tsv", ("\n".join(tsv) + "\n").encode())
    doc = {"batch": str(folder), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "counts": counts(table), "jobs": table}
    atomic_write_bytes(folder / "summary.json", (json.dumps(doc, indent=2) + "\n").encode())
    atomic_write_bytes(folder / "index.html", _page(plan, folder, table).encode())
    return table


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return " ".join(str(v).split())  # one line, no tabs


def _page(plan: dict[str, Any], folder: Path, table: list[dict[str, Any]]) -> str:
    e = html.escape
    c = counts(table)
    settings = plan.get("settings", {})
    head = (f"<h1>voicesearch batch</h1><p>{e(str(folder))} &middot; targets from {e(str(plan.get('targets', '')))} "
            f"&middot; created {e(str(plan.get('created', '')))}</p>"
            f"<p class=counts>{c['done']} done, {c['running']} running, {c['failed']} failed, "
            f"{c['interrupted'] + c['pending']} to do, of {len(table)}</p>")
    lines = []
    for r in table:
        report = folder / r["run"] / "report.html"
        link = (f'<a href="{e(r["run"])}/report.html">{e(r["id"])}</a>' if report.is_file() else e(r["id"]))
        best = "" if r["best"] is None else f"{r['best']:.4f}"
        lines.append(f"<tr class={e(r['status'])}><td>{link}</td><td>{e(r['target'])}</td><td>{e(r['strategy'])}</td>"
                     f"<td>{e(r['scorer'])}</td><td class=n>{best}</td><td class=n>{r['evaluations']}</td>"
                     f"<td class=n>{r['seconds']:.1f}</td><td>{e(r['status'])}</td><td class=n>{r['attempts']}</td>"
                     f"<td>{e(r['error'])}</td></tr>")
    budget = {k: settings.get(k) for k in ("steps", "evals", "seconds") if settings.get(k) is not None}
    shown = {**budget, "batch": settings.get("batch"), "device": settings.get("device")}
    if isinstance(plan.get("defaults"), dict):  # what was left unset took `voicesearch clone`'s defaults there
        shown["defaults of"] = plan["defaults"].get("device")
    foot = f"<p class=small>settings: {e(json.dumps(shown))}</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>voicesearch batch</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}} td.n{{text-align:right;font-variant-numeric:tabular-nums}}
tr.failed td{{color:#a00}} tr.running td,tr.pending td,tr.interrupted td{{color:#888}} .counts{{font-weight:600}}
.small{{color:#666;font-size:12px}}</style></head><body>{head}
<table><tr><th>run (report)</th><th>target</th><th>strategy</th><th>scorer</th><th>best</th><th>evaluations</th>
<th>seconds</th><th>status</th><th>attempts</th><th>error</th></tr>
{''.join(lines)}</table>{foot}</body></html>
"""

