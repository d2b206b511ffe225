"""`inspect_checkpoint`: what a checkpoint folder holds, and how it differs from what its config implies.

Only the config and the file headers are read, never the weights, so inspecting a release-size
checkpoint takes seconds. Problems are reported, not raised, so a broken folder can be diagnosed.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ..model import Transformer
from .dtype import config_dtype, dtype_name
from .errors import CheckpointError, listing
from .header import TensorInfo
from .index import INDEX, checkpoint_tensors
from .layouts import detect_layout
from .load import fp8_block, read_config, without_absent_mtp
from .official import is_quantized, weight_of_scale
from .plan import make_plan
from .quantized import is_release_config, quantized_plan, stored_scheme
from .side_files import GENERATION_CONFIG, SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG, TOKENIZER_JSON


def inspect_checkpoint(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of the checkpoint folder `path`.

    Keys: path, ok, layout, config (dims, layer kinds and ratios, experts), dtype, parameters
    (total / main / mtp, as the config implies), shards (file, bytes, tensors), total_bytes,
    tensors, dtypes (tensor count by dtype), quantization (scheme, quantised weights by format),
    tokenizer (its files, checked as the engine and transformers read them), missing, unexpected,
    problems, errors.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder")
    out: dict[str, Any] = {
        "path": str(folder), "ok": False, "layout": None, "config": None, "dtype": None, "parameters": None,
        "shards": [], "total_bytes": 0, "tensors": 0, "dtypes": {}, "quantization": None,
        "missing": [], "unexpected": [], "problems": [], "errors": [], "notes": [], "index": False,
    }  # fmt: skip
    cfg = raw = None
    try:
        cfg, raw = read_config(folder)
        out["dtype"] = dtype_name(d) if (d := config_dtype(raw)) else None
    except CheckpointError as e:
        out["errors"].append(str(e))
    try:
        tensors = checkpoint_tensors(folder)
    except CheckpointError as e:
        out["errors"].append(str(e))
        tensors = {}

    by_file: dict[Path, list[TensorInfo]] = {}
    for t in tensors.values():
        by_file.setdefault(t.file, []).append(t)
    out["shards"] = [
        {"file": f.name, "bytes": f.stat().st_size, "tensors": len(ts)} for f, ts in sorted(by_file.items())
    ]
    out["index"] = (folder / INDEX).exists()
    out["total_bytes"] = sum(s["bytes"] for s in out["shards"])
    out["tensors"] = len(tensors)
    out["dtypes"] = dict(Counter(dtype_name(t.dtype) if t.dtype else t.dtype_name for t in tensors.values()))
    if tensors:
        out["layout"] = detect_layout(set(tensors))
    out["quantization"] = _quantization(tensors, raw or {})

    if cfg is not None and tensors:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = without_absent_mtp(cfg, list(tensors), folder)
        out["notes"] = [str(w.message) for w in caught]
        with torch.device("meta"):
            model = Transformer(cfg)

        plan = quantized_plan(tensors, cfg, raw or {}) or make_plan(tensors, model.state_dict(), fp8_block(raw))
        out["missing"] = plan.missing
        out["unexpected"] = [t.name for t in plan.unexpected]
        out["problems"] = plan.problems
        total = sum(p.numel() for p in model.parameters())
        mtp = sum(p.numel() for n, p in model.named_parameters() if n.startswith("mtp."))
        out["parameters"] = {"total": total, "main": total - mtp, "mtp": mtp}
    if cfg is not None:
        out["config"] = _config_summary(cfg)
    out["tokenizer"] = _tokenizer(folder, raw or {}, out["errors"])
    out["ok"] = not (out["errors"] or out["missing"] or out["unexpected"] or out["problems"])
    return out


def _config_summary(cfg) -> dict[str, Any]:
    kinds = [cfg.layer_kind(i) for i in range(cfg.n_layers)]
    ratios: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        if kind != "window" and cfg.ratio(i) not in ratios.setdefault(kind, []):
            ratios[kind].append(cfg.ratio(i))
    return {
        "vocab_size": cfg.vocab_size,
        "dim": cfg.dim,
        "n_layers": cfg.n_layers,
        "n_mtp_layers": cfg.n_mtp_layers,
        "n_heads": cfg.n_heads,
        "head_dim": cfg.head_dim,
        "rope_head_dim": cfg.rope_head_dim,
        "q_lora_rank": cfg.q_lora_rank,
        "o_groups": cfg.o_groups,
        "o_lora_rank": cfg.o_lora_rank,
        "window_size": cfg.window_size,
        "layer_kinds": {k: kinds.count(k) for k in ("window", "csa", "hca")},
        "ratios": ratios,
        "n_routed_experts": cfg.n_routed_experts,
        "n_activated_experts": cfg.n_activated_experts,
        "n_shared_experts": cfg.n_shared_experts,
        "moe_inter_dim": cfg.moe_inter_dim,
        "n_hash_layers": cfg.n_hash_layers,
        "score_func": cfg.score_func,
    }


def _quantization(tensors: dict[str, TensorInfo], raw: dict) -> dict[str, Any]:
    """The scheme (ours: from config.json; DeepSeek's release: "release") and the quantised weights
    by format: a weight is quantised when its `.scale` is stored beside it."""

    weights = [w for n in tensors if n.endswith(".scale") and (w := tensors.get(weight_of_scale(n)))]
    try:
        scheme = stored_scheme(raw)
    except CheckpointError:  # reported with the config's other errors
        scheme = None
    if scheme is not None:
        def fmt(w: TensorInfo) -> str:
            return scheme.format_for(w.name.removesuffix(".weight")) or "?"
        name = scheme.name
    else:  # the release's storage, told by dtype: FP8 E4M3 blocks, or E2M1 codes packed in int8
        def fmt(w: TensorInfo) -> str:
            return "fp8" if w.dtype == torch.float8_e4m3fn else "mxfp4" if is_quantized(w.dtype) else "?"
        name = "release" if is_release_config(raw) or any(is_quantized(w.dtype) for w in weights) else None
    formats = Counter(fmt(w) for w in weights)
    return {
        "config": raw.get("quantization_config"),
        "expert_dtype": raw.get("expert_dtype"),
        "scheme": name,
        "roles": {r: getattr(scheme, r) for r in ("dense", "experts", "head")} if scheme else None,
        "act_quant": scheme.act_quant if scheme else None,
        "formats": dict(sorted(formats.items())),
        "weights": len(weights),
        "scales": len(weights),
    }


def _tokenizer(folder: Path, raw: dict, errors: list[str]) -> dict[str, Any] | None:
    """What the tokenizer files say (None without a tokenizer.json); every problem, naming its file,
    goes to `errors`: a folder whose tokenizer cannot be read does not serve text."""
    from ..tokenizer import Tokenizer, TokenizerError

    docs = {}
    for name in (GENERATION_CONFIG, SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG):
        if (folder / name).is_file():
            docs[name] = _json_object(folder / name, errors)
    if not (folder / TOKENIZER_JSON).is_file():
        return None
    try:
        tok = Tokenizer.from_file(folder)
    except TokenizerError as e:
        if str(e) not in errors:
            errors.append(str(e))
        return {"file": TOKENIZER_JSON, "ok": False}
    vocab, bos = raw.get("vocab_size"), raw.get("bos_token_id")
    if isinstance(vocab, int) and tok.vocab_size > vocab:
        errors.append(f"{folder / TOKENIZER_JSON}: {tok.vocab_size} tokens, but config.json's vocab_size is {vocab}")
    if tok.bos_token_id is not None and isinstance(bos, int) and tok.bos_token_id != bos:
        errors.append(
            f"{folder / TOKENIZER_CONFIG}: bos_token has id {tok.bos_token_id}, config.json's bos_token_id is {bos}"
        )
    return {
        "file": TOKENIZER_JSON,
        "ok": True,
        "tokens": tok.vocab_size,
        "bos_token_id": tok.bos_token_id if tok.bos_token_id is not None else bos,
        "add_bos": tok.add_bos_token if tok.add_bos_token is not None else True,
        "tokenizer_config": TOKENIZER_CONFIG in docs,
        "chat_template": bool((docs.get(TOKENIZER_CONFIG) or {}).get("chat_template")),
        "generation_config": GENERATION_CONFIG in docs,
    }


def _json_object(file: Path, errors: list[str]) -> dict | None:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        errors.append(f"{file}: not valid JSON ({e})")
        return None
    if not isinstance(doc, dict):
        errors.append(f"{file}: expected a JSON object, got {type(doc).__name__}")
        return None
    return doc


def _format_tokenizer(t: dict[str, Any] | None) -> str:
    if t is None:
        return "none (prompts as token ids only)"
    if not t["ok"]:
        return f"{t['file']} cannot be read (below)"
    bos = f"BOS {t['bos_token_id']} added to text prompts" if t["add_bos"] else "no BOS added to text prompts"
    parts = [f"{t['file']}, {t['tokens']} tokens", bos]
    parts.append("chat template" if t["chat_template"] else "no chat template (transformers cannot render chats)")
    if not t["tokenizer_config"]:
        parts.append("no tokenizer_config.json (transformers finds no BOS / EOS)")
    parts.append("generation_config.json" if t["generation_config"] else "no generation_config.json")
    return "; ".join(parts)


def _format_quantization(q: dict[str, Any] | None) -> str:
    if not q or not (q["weights"] or q["config"]):
        return "none"
    by_format = ", ".join(f"{n} {f}" for f, n in q["formats"].items()) or "none found"
    counts = f"{q['weights']} quantised weights ({by_format}), {q['scales']} scales"
    if q["scheme"] == "release":
        qc = q["config"] or {}
        blocks = f"{qc.get('fmt', '?')} / {qc.get('scale_fmt', '?')} scales, blocks {qc.get('weight_block_size', '?')}"
        return f"DeepSeek's release storage ({blocks}; expert_dtype {q['expert_dtype']}): {counts}"
    if q["scheme"]:
        roles = ", ".join(f"{r} {f or 'float'}" for r, f in q["roles"].items())
        act = ", activations fp8" if q["act_quant"] else ""
        return f"scheme {q['scheme']} ({roles}{act}): {counts}"
    return f"quantization_config {q['config']} names no scheme trillion reads: {counts}"


def format_inspection(info: dict[str, Any]) -> str:
    """The human summary of an `inspect_checkpoint` dict."""
    lines = [f"checkpoint    {info['path']}  (layout {info['layout'] or '?'})"]
    c = info["config"]
    if c:
        k, r = c["layer_kinds"], c["ratios"]
        kinds = ", ".join(
            f"{k[kind]} {kind}" + (f" (ratio {'/'.join(map(str, r[kind]))})" if r.get(kind) else "")
            for kind in ("window", "csa", "hca")
            if k[kind]
        )
        lines += [
            (f"config        dim {c['dim']}, {c['n_layers']} layers + {c['n_mtp_layers']} MTP, "
            f"{c['n_heads']} heads x {c['head_dim']} (rope {c['rope_head_dim']}), vocab {c['vocab_size']}, "
            f"window {c['window_size']}"),
            f"layers        {kinds}",
            (f"experts       {c['n_routed_experts']} routed (top-{c['n_activated_experts']}) + "
            f"{c['n_shared_experts']} shared, width {c['moe_inter_dim']}, {c['n_hash_layers']} hash layers, "
            f"{c['score_func']}"),
        ]
    if info.get("dtype"):
        lines.append(f"dtype         {info['dtype']}")
    if info["parameters"]:
        p = info["parameters"]
        lines.append(
            f"parameters    {_count(p['total'])} ({_count(p['main'])} main + {_count(p['mtp'])} MTP)"
        )
    shards = info["shards"]
    if shards:
        shown = ", ".join(f"{s['file']} ({_bytes(s['bytes'])}, {s['tensors']} tensors)" for s in shards[:4])
        more = f", and {len(shards) - 4} more" if len(shards) > 4 else ""
        index = " + index" if info.get("index") else ""
        total = _bytes(info["total_bytes"])
        lines.append(f"files         {len(shards)} shard(s){index}, {total}: {shown}{more}")
    if info["dtypes"]:
        by_dtype = ", ".join(f"{n} {d}" for d, n in sorted(info["dtypes"].items(), key=lambda kv: -kv[1]))
        lines.append(f"tensors       {info['tensors']}: {by_dtype}")
    lines.append(f"quantization  {_format_quantization(info['quantization'])}")
    lines.append(f"tokenizer     {_format_tokenizer(info.get('tokenizer'))}")
    for note in info.get("notes", []):
        lines.append(f"note          {note}")
    if info["ok"]:
        lines.append("status        ok: every tensor the config implies is present, nothing unexpected")
    else:
        lines.append("status        NOT LOADABLE")
        lines += [f"  error: {e}" for e in info["errors"]]
        lines += [f"  problem: {p}" for p in info["problems"][:10]]
        if info["missing"]:
            lines.append(f"  missing ({len(info['missing'])}): {listing(info['missing'])}")
        if info["unexpected"]:
            lines.append(f"  unexpected ({len(info['unexpected'])}): {listing(info['unexpected'])}")
    return "\n".join(lines)


def _count(n: int) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
