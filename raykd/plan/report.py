"""``raykd plan``'s text report: models, the teacher cache, one row per stage, problems."""

from __future__ import annotations

from raykd.plan.capacity import GIB


def _size(n: float) -> str:
    """Bytes as GiB (one decimal), or MiB below 1 GiB, so small models do not read as 0."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / (1 << 20):.1f} MiB"


def _count(n: int) -> str:
    """A parameter count the way model cards write it: 70.55B, 16.38M."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _ask_text(ask: dict) -> str:
    return f"{ask['CPU']:g} CPU" + (f", {ask['GPU']:g} GPU" if ask.get("GPU") else "")


def render_text(plan: dict) -> str:
    """The plan as a table: models, cache, one row per stage (its memory terms under it), problems."""
    out = [f"GPU memory {plan['gpu_memory_gib']:g} GiB per GPU; cluster file {plan['cluster'] or '(none)'}; "
           "activation checkpointing " + ", ".join(f"{stage} {'on' if on else 'off'}" for stage, on in
                                                   plan["activation_checkpointing"].items()),
           "", "models (meta device, no weights loaded)"]
    for role, m in plan["models"].items():
        lora = f" (LoRA on {', '.join(m['lora_targets'])})" if m.get("lora_targets") else ""
        out.append(f"  {role:8} {m['spec']}: {_count(m['params'])} params, {m['layers']} layers, "
                   f"trainable {_count(m['trainable'])}{lora}")
    c = plan["cache"]
    out += ["", f"teacher cache: {c['rows']} rows + {c['held_out_rows']} held out, at most {c['positions']} target "
            f"positions, {c['bytes_per_row']} B/row: at most {_size(c['bytes'])} uncompressed"
            + ("" if c["tail_samples"] else " (top-k only: a vLLM cache has no tail columns)")]
    out += [f"  {note}" for note in c["notes"]]
    out += ["", f"{'stage':14} {'ask (each)':14} {'x':>3} {'memory each':>17}  {'nodes (worker type)':40} fits"]
    shown: set[str] = set()
    for s in plan["stages"]:
        each = _size(sum(s["memory_bytes"].values())) + ("/GPU" if s["on_gpu"] else " RAM")
        out.append(f"{s['stage']:14} {_ask_text(s['ask']):14} {s['count']:>3} {each:>17}  "
                   f"{_placement_text(plan, s['group'], shown):40} {'yes' if s['fits'] else 'NO'}")
        terms = ", ".join(f"{k} {_size(v)}" for k, v in s["memory_bytes"].items() if v)
        extra = f"; KV cache holds {s['kv_tokens']} tokens" if s["kv_tokens"] is not None else ""
        out.append(f"    {terms}{extra}" + (f"; engine {s['engine']}" if s["engine"] else ""))
    out += ["", "problems:" if plan["problems"] else "every stage fits"] + [f"  {p}" for p in plan["problems"]]
    return "\n".join(out)




def _placement_text(plan: dict, group: str, shown: set[str]) -> str:
    """``2 x gpu-train`` for a group's first row, ``(same nodes)`` for the rest of it, ``-`` without a cluster."""
    if group not in plan["placements"]:
        return "-"
    if group in shown:
        return "(the nodes above)"
    shown.add(group)
    p = plan["placements"][group]
    text = " + ".join(f"{n} x {name}" for name, n in p["nodes"].items()) or "none"
    return text + (f", {p['unplaced']} asks unplaced" if p["unplaced"] else "")
