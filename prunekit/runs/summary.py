"""A finished run in words: the summary lines ``prunekit prune`` prints and the headline fields of its JSON
summary, from the run record alone (``run.json``'s sections)."""
from __future__ import annotations


def speed_summary(speed: dict | None) -> str:
    """``speedup 1.4× (batch 1), 1.7× (batch 32) on onnxruntime-cpu`` for a summary line ('' when not measured)."""
    if not speed or not speed.get("batches"):
        return f"speed not measured ({speed['skipped']})" if speed and speed.get("skipped") else ""
    parts = ", ".join(f"{r['speedup']:.2f}× (batch {r['batch']})" for r in speed["batches"])
    slower = [r["batch"] for r in speed["batches"] if r["speedup"] < 1]
    text = f"speedup {parts} on {speed['runtime']}"
    text += f" — SLOWER than dense at batch {', '.join(map(str, slower))}" if slower else ""
    over = [r for r in speed["batches"] if "over_fastest_dense" in r]
    if over:
        text += "; over the fastest dense deployment " + ", ".join(
            f"{r['over_fastest_dense']:.2f}× (batch {r['batch']}: {r['fastest_dense']['runtime']}, "
            f"{r['fastest_dense']['precision']})" for r in over)
    return text


def fidelity_words(values: dict[str, dict]) -> str:
    """``out: pixel agreement 97.1 %, mIoU 93.2 %`` for a summary line."""
    names = {"top1_agreement": "top-1 agreement", "pixel_agreement": "pixel agreement", "miou": "mIoU"}
    parts = []
    for output, metrics in values.items():
        shown = [f"{names[k]} {v:.1f} %" for k, v in metrics.items() if k in names]
        shown += [f"relative L2 error {v:.3f}" for k, v in metrics.items() if k == "rel_l2"]
        parts.append(f"{output}: {', '.join(shown)}")
    return "; ".join(parts)


def summary_lines(run: dict, out: str) -> list[str]:
    """The lines ``prunekit prune`` prints at the end: the search, sizes and accuracy, speed, fidelity."""
    acc = run.get("accuracy") or {}
    acc_text = "" if not acc else (f"; test accuracy {acc['dense']:.2f}% → {acc['pruned']:.2f}%"
                                   + (f" → {acc['pruned_finetuned']:.2f}% after fine-tuning"
                                      if "pruned_finetuned" in acc else ""))
    lines = []
    if run.get("search"):
        sr = run["search"]
        lines.append(f"{out}: search {sr['schedule']}, {sr['rounds']} rounds, chose round {sr['chosen_round']} "
                     f"({sr['stopped']}), {sr['wall_s'] / 60:.1f} min")
    lines.append(f"{out}: params -{run['reduction']['params']:.1%}, MACs -{run['reduction']['macs']:.1%}"
                 f" ({run['dense']['params']:,} → {run['pruned']['params']:,} params){acc_text}")
    if speed_summary(run.get("speed")):
        lines.append(f"{out}: {speed_summary(run.get('speed'))}")
    fid = run.get("fidelity") or {}
    last = next((k for k in ("pruned_finetuned", "pruned_bn", "pruned") if k in fid), None)
    if last and not acc:  # without labels, agreement with the dense model is the reading
        lines.append(f"{out}: fidelity to the dense model on {fid['images']} {fid['split']} images "
                     f"({last.replace('_', ' ')}): {fidelity_words(fid[last])}")
    return lines


def summary_fields(run: dict, out: str) -> dict:
    """The headline figures of a run, for the JSON summary event."""
    sr, batches = run.get("search") or {}, (run.get("speed") or {}).get("batches", [])
    return {"out": out, "target": run["target"], "reduction": run["reduction"],
            "params": {"dense": run["dense"]["params"], "pruned": run["pruned"]["params"]},
            "macs": {"dense": run["dense"]["macs"], "pruned": run["pruned"]["macs"]},
            "accuracy": run.get("accuracy") or None, "fidelity": run.get("fidelity") or None,
            "speedup": {str(r["batch"]): r["speedup"] for r in batches},
            "over_fastest_dense": {str(r["batch"]): {"speedup": r["over_fastest_dense"], **r["fastest_dense"]}
                                   for r in batches if "over_fastest_dense" in r},
            "search": {k: sr[k] for k in ("schedule", "rounds", "chosen_round", "stopped", "wall_s")} if sr else None}
