"""The MTP block against transformers' own decoder layer, hyper-head and norm.

transformers drops the MTP block, so the reference is assembled from its pieces: the block is a
window-only, score-routed DeepseekV4DecoderLayer; the input is
e_proj(enorm(embed(t+1))) + h_proj(hnorm(h_t)); the output goes through a DeepseekV4HyperHead, an
RMSNorm and the shared head.
"""

import torch
import torch.nn.functional as F
from helpers import load_hf_reference, mixed_config, random_model, save_hf_reference
from transformers.masking_utils import create_sliding_window_causal_mask

from trillion.checkpoint.layouts import HF, to_checkpoint_name
from trillion.model import Transformer


def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def test_mtp_logits_match_a_reference_built_from_transformers_parts(tmp_path):
    cfg = mixed_config()
    model = random_model(cfg)
    # A one-layer model whose only layer carries the MTP block's weights, loaded by transformers.
    one = cfg.replace(n_layers=1, compress_ratios=(cfg.compress_ratios[-1], 0), n_hash_layers=0)
    carrier = Transformer(one)
    block_sd = {k[len("mtp.0.") :]: v for k, v in model.state_dict().items() if k.startswith("mtp.0.")}
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith(("layers.", "mtp."))}
    sd.update({f"layers.0.{k}": v for k, v in block_sd.items() if f"layers.0.{k}" in carrier.state_dict()})
    sd.update({f"mtp.0.{k}": v for k, v in block_sd.items()})
    carrier.load_state_dict(sd)
    ref = load_hf_reference(save_hf_reference(carrier, tmp_path / "carrier"))

    ids = torch.randint(0, cfg.vocab_size, (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, hidden = model(ids[:, :-1], return_hidden=True)
        ours = model.mtp_logits(hidden, ids[:, 1:])

        blk = model.mtp[0]
        eps = cfg.norm_eps
        e = _rms(ref.model.embed_tokens(ids[:, 1:]), blk.enorm.weight, eps)
        h = _rms(hidden, blk.hnorm.weight, eps)
        x = F.linear(e, blk.e_proj.weight).unsqueeze(2) + F.linear(h, blk.h_proj.weight)
        pos = torch.arange(x.shape[1]).unsqueeze(0)
        inner = ref.model
        pe = {k: inner.rotary_emb(x[:, :, 0], position_ids=pos, layer_type=k) for k in ("main", "compress")}
        mask = create_sliding_window_causal_mask(
            config=inner.config, inputs_embeds=x[:, :, 0], attention_mask=None, cache=None, position_ids=pos
        )
        x = inner.layers[0](x, position_embeddings=pe, position_ids=pos, attention_mask=mask, input_ids=ids[:, 1:])
        head = inner.hc_head
        head.hc_fn.copy_(blk.hc_head_fn)
        head.hc_base.copy_(blk.hc_head_base)
        head.hc_scale.copy_(blk.hc_head_scale)
        theirs = ref.lm_head(_rms(head(x), blk.norm.weight, eps))
    assert ours.shape == (2, 29, cfg.vocab_size)
    assert (ours - theirs).abs().max() <= 1e-4


def test_mtp_names_follow_deepseek():
    names = set(random_model(mixed_config()).state_dict())
    for n in ("mtp.0.e_proj.weight", "mtp.0.h_proj.weight", "mtp.0.enorm.weight", "mtp.0.hnorm.weight",
              "mtp.0.norm.weight", "mtp.0.hc_head_fn", "mtp.0.attn.wq_a.weight", "mtp.0.ffn.gate.bias"):
        assert n in names
    assert not any(n.startswith(("mtp.0.embed", "mtp.0.head")) for n in names)
    assert to_checkpoint_name("mtp.0.attn.kv_norm.weight", HF) == "mtp.0.attn.kv_norm.weight"
