"""Run reports: ``report.md`` (dense vs pruned, per-layer channels, the search's rounds) and PNG plots
(accuracy vs params / MACs over the rounds, accepted and rejected rounds marked; per-layer channels).

``prunekit prune`` writes the report at the end of every run; ``prunekit report RUN_DIR`` rewrites it.
Plots use matplotlib's headless Agg backend.
"""
from __future__ import annotations

import json
import os

from prunekit.errors import user_input
from prunekit.files import atomic_write_bytes
from prunekit.runs.record import RunRecord

ROUND_FIELDS = ("round", "T", "lambda", "params", "macs", "val_accuracy", "accepted", "decision")


def _read_run(run_dir: str) -> tuple[RunRecord, list[dict]]:
    run = RunRecord.read(run_dir)
    rounds = []
    jsonl = os.path.join(run_dir, "rounds.jsonl")
    if os.path.isfile(jsonl):
        with open(jsonl) as f, user_input(f"{jsonl} is damaged"):
            rounds = [json.loads(line) for line in f if line.strip()]
            for r in rounds:
                missing = [k for k in ROUND_FIELDS if k not in r]
                if missing:
                    raise ValueError(f"a round lacks {', '.join(missing)}")
    return run, rounds


def _save_png(fig, path: str) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_rounds(run: RunRecord, rounds: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = (run.search or {}).get("chosen_round")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "macs", "MACs")):
        dense = rounds[0][key]
        xs = [100 * (1 - r[key] / dense) for r in rounds]
        ys = [r["val_accuracy"] for r in rounds]
        ax.plot(xs, ys, color="0.75", lw=1, zorder=1)
        for r, x, y in zip(rounds, xs, ys):
            ax.annotate(str(r["round"]), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color="0.4")
        acc = [(x, y) for r, x, y in zip(rounds, xs, ys) if r["accepted"]]
        rej = [(x, y) for r, x, y in zip(rounds, xs, ys) if not r["accepted"]]
        if acc:
            ax.scatter(*zip(*acc), color="tab:green", label="accepted", zorder=2)
        if rej:
            ax.scatter(*zip(*rej), color="tab:red", marker="x", label="rejected (rolled back)", zorder=2)
        if chosen is not None:
            c = next((i for i, r in enumerate(rounds) if r["round"] == chosen), None)
            if c is not None:
                ax.scatter([xs[c]], [ys[c]], s=160, facecolors="none", edgecolors="black", label="delivered",
                           zorder=3)
        target = run.target
        if target.get("kind") in ("params", "macs") and (target["kind"] == key):
            ax.axvline(100 * target["amount"], color="tab:blue", ls="--", lw=1, label="target")
        ax.set_xlabel(f"{label} removed (%)")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{run.model['name']}: search rounds ({run.target.get('text', '')})")
    _save_png(fig, path)
    plt.close(fig)


def plot_channels(run: RunRecord, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [r for r in run.layers if r["type"] == "Conv2d"]
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(layers)), 4))
    idx = range(len(layers))
    ax.bar(idx, [r["out_before"] for r in layers], color="0.85", label="dense")
    ax.bar(idx, [r["out_after"] for r in layers], color="tab:blue", label="pruned")
    ax.set_xticks(list(idx))
    ax.set_xticklabels([r["layer"] for r in layers], rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    ax.set_title(f"{run.model['name']}: channels per conv layer")
    ax.legend()
    _save_png(fig, path)
    plt.close(fig)


def _pct(a, b) -> str:
    return f"{100 * (1 - b / a):.1f} %" if a else "–"


def write_report(run_dir: str) -> str:
    """Write ``report.md`` and its PNG plots into ``run_dir``; returns the report's path."""
    run, rounds = _read_run(run_dir)
    with user_input(f"cannot write a report from {os.path.join(run_dir, 'run.json')}"):
        return _write_report(run_dir, run, rounds)


def _fidelity_lines(fid: dict | None) -> list[str]:
    """Agreement with the dense model per output and stage (what a run without labels is judged on)."""
    if not fid:
        return []
    from prunekit.runs.summary import fidelity_words

    stages = [("pruned", "after surgery"), ("pruned_bn", "after BN re-estimation"),
              ("pruned_finetuned", "after fine-tuning")]
    return ["", f"Fidelity to the dense model on {fid['images']} {fid['split']} images:", ""] + [
        f"- {words}: {fidelity_words(fid[stage])}" for stage, words in stages if stage in fid]


def _speed_lines(speed: dict | None) -> list[str]:
    if not speed or not speed.get("batches"):
        return []
    from prunekit.runs.summary import speed_summary

    return ["", f"Speed: {speed_summary(speed)}."]


def _write_report(run_dir: str, run: RunRecord, rounds: list[dict]) -> str:
    d, p = run.dense, run.pruned
    acc = run.accuracy or {}
    lines = [f"# prunekit report: {run.model['name']}", "",
             f"Target `{run.target['text']}`, schedule `{run.config['schedule']}`, criterion "
             f"`{run.config['criterion']}`, data `{run.data['spec']}`.", ""]
    if run.search:
        s = run.search
        lines += [f"Search: {s['rounds']} rounds, {s['rollbacks']} rollbacks, stopped: {s['stopped']}; delivered "
                  f"round {s['chosen_round']}; {s['wall_s'] / 60:.1f} min.", ""]
    sizes = {}
    for name in ("pruned.pt", "model.onnx", "dense.onnx"):
        f = os.path.join(run_dir, name)
        if os.path.isfile(f):
            sizes[name] = os.path.getsize(f)
    lines += ["| | dense | pruned | reduction |", "| --- | ---: | ---: | ---: |",
              f"| parameters | {d['params']:,} | {p['params']:,} | {_pct(d['params'], p['params'])} |",
              f"| MACs (FLOPs = 2 × MACs) | {d['macs']:,} | {p['macs']:,} | {_pct(d['macs'], p['macs'])} |"]
    if "dense.onnx" in sizes and "model.onnx" in sizes:
        lines.append(f"| ONNX file (bytes) | {sizes['dense.onnx']:,} | {sizes['model.onnx']:,} | "
                     f"{_pct(sizes['dense.onnx'], sizes['model.onnx'])} |")
    if acc.get("dense") is not None:
        after = acc.get("pruned_finetuned", acc.get("pruned"))
        lines.append(f"| test accuracy ({acc['images']:,} images) | {acc['dense']:.2f} % | {after:.2f} % | "
                     f"{after - acc['dense']:+.2f} points |")
    if d.get("latency_ms") and p.get("latency_ms"):
        lines.append(f"| latency (onnxruntime, batch 1, ms) | {d['latency_ms']:.3f} | {p['latency_ms']:.3f} | "
                     f"{_pct(d['latency_ms'], p['latency_ms'])} |")
    lines += _fidelity_lines(run.fidelity) + _speed_lines(run.speed)
    lines += ["", "Verification: " + "; ".join(
        f"{c['check']}: {'passed' if c['passed'] else 'FAILED'} (max abs diff {c.get('max_abs_diff', 0):.2g})"
        for c in run.verification or [])]
    if run.export:
        e = run.export
        lines.append(f"ONNX export: {'passed' if e['passed'] else 'FAILED'}, " + "; ".join(
            c["detail"] for c in e["checks"] if c["check"].startswith("onnxruntime")))
    if rounds:
        plot_rounds(run, rounds, os.path.join(run_dir, "rounds.png"))
        lines += ["", "## Rounds", "", "![accuracy vs size over the rounds](rounds.png)", "",
                  "| round | T | λ | params | MACs | val acc | accepted | decision |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for r in rounds:
            lines.append(f"| {r['round']} | {r['T']:.4f} | {r['lambda']:.4g} | {r['params']:,} | {r['macs']:,} | "
                         f"{r['val_accuracy']:.2f} | {'yes' if r['accepted'] else 'no'} | {r['decision']} |")
    plot_channels(run, os.path.join(run_dir, "channels.png"))
    lines += ["", "## Channels per layer", "", "![channels per conv layer](channels.png)", "",
              "| layer | out before | out after | params before | params after |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for r in run.layers:
        lines.append(f"| {r['layer']} | {r['out_before']} | {r['out_after']} | {r['params_before']:,} | "
                     f"{r['params_after']:,} |")
    path = os.path.join(run_dir, "report.md")
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
