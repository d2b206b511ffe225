"""`trillion train --flavor FLAVOR --data PATH_OR_stdlib --out DIR [...]`: train a V4 model from scratch.

A thin wrapper over `trillion.train.train(TrainConfig)`; the run is described in docs/training.md.
Every option maps to one TrainConfig field of the same name.
"""

from __future__ import annotations

import argparse

from ..flavors import FLAVORS
from .common import non_negative_int, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..train.config import TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a V4-architecture model from scratch (tokenizer, Muon + AdamW, MTP, balancing)",
        description="Train a byte-level BPE tokenizer on the data, then a model of the chosen flavor: Muon "
        "for matrices and AdamW for the rest, warm-up + cosine, gradient clipping, aux-loss-free "
        "balancing plus the sequence-wise balance loss, the MTP loss, the indexer's KL loss. Writes "
        "metrics.jsonl, loss.png, expert_load.png, atomic checkpoints (the last --keep) and, at the "
        "end, OUT/model (weights, tokenizer, training.json). See docs/training.md.",
    )
    p.add_argument(
        "--flavor",
        default=d.flavor,
        help=f"a flavor ({', '.join(FLAVORS)}), a shipped model (demo: its recipe) or a config.json path",
    )
    p.add_argument(
        "--data",
        nargs="+",
        default=list(d.data),
        metavar="PATH_OR_stdlib",
        help="text files or folders, or 'stdlib' (this Python's standard library sources)",
    )
    p.add_argument("--out", required=True,
                   help="the run folder (created; --resume continues it, --resume --steps N extends it)")
    p.add_argument("--steps", type=positive_int, default=d.steps,
                   help="optimizer steps; with --resume, more than the run had extends it (see --decay-steps)")
    p.add_argument(
        "--seq-len", type=int, default=d.seq_len, help="tokens per sequence"
    )
    p.add_argument("--batch", type=int, default=d.batch, help="sequences per step")
    p.add_argument(
        "--lr", type=float, default=d.lr, help="peak learning rate, Muon and AdamW"
    )
    p.add_argument(
        "--min-lr-ratio", type=float, default=d.min_lr_ratio, help="cosine floor as a fraction of --lr"
    )
    p.add_argument("--warmup", type=non_negative_int, default=d.warmup, help="warm-up steps")
    p.add_argument(
        "--decay-steps", type=positive_int, default=None,
        help="the cosine reaches its floor at this step, later steps hold it (default: --steps; a run "
        "extended by --resume --steps keeps its own)",
    )
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW and Muon weight decay")
    p.add_argument("--clip", type=float, default=d.clip, help="gradient-norm clip")
    p.add_argument(
        "--vocab-size", type=int, default=None, help="tokenizer and model vocabulary (default: the flavor's)"
    )
    p.add_argument("--heldout", type=float, default=d.heldout, help="fraction of documents held out")
    p.add_argument("--max-docs", type=int, default=None, help="use only the first N documents (quick runs)")
    p.add_argument("--mtp-weight", type=float, default=d.mtp_weight, help="weight of the MTP loss")
    p.add_argument(
        "--balance-alpha", type=float, default=d.balance_alpha, help="sequence-wise balance loss weight"
    )
    p.add_argument("--bias-gamma", type=float, default=d.bias_gamma, help="balancing-bias update speed")
    p.add_argument(
        "--indexer-weight", type=float, default=d.indexer_weight, help="indexer KL loss weight (0: off)"
    )
    p.add_argument(
        "--passkey", type=float, default=d.passkey, metavar="FRACTION",
        help="replace this fraction of each batch by synthetic passkey retrieval (a key hidden in the training "
             "text, asked for at the end; what `trillion eval --task passkey` measures)",
    )
    p.add_argument(
        "--activation-checkpointing", action="store_true", help="recompute block activations in backward"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the init and the data order")
    p.add_argument("--log-every", type=positive_int, default=d.log_every, help="steps per metrics line")
    p.add_argument(
        "--eval-every", type=int, default=d.eval_every, help="held-out evaluation period (0: end only)"
    )
    p.add_argument("--eval-batches", type=int, default=d.eval_batches, help="batches per periodic evaluation")
    p.add_argument("--save-every", type=positive_int, default=d.save_every, help="steps per checkpoint")
    p.add_argument("--keep", type=positive_int, default=d.keep, help="checkpoints to keep")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop this invocation after N steps (the schedule still spans --steps); continue with --resume",
    )
    p.add_argument(
        "--threads", type=positive_int, default=None,
        help="torch CPU threads (default: torch's choice; resume with the same for exact losses)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    cfg = TrainConfig(
        flavor=args.flavor,
        data=tuple(args.data),
        out=args.out,
        vocab_size=args.vocab_size,
        seq_len=args.seq_len,
        batch=args.batch,
        heldout=args.heldout,
        max_docs=args.max_docs,
        steps=args.steps,
        lr=args.lr,
        min_lr_ratio=args.min_lr_ratio,
        warmup=args.warmup,
        decay_steps=args.decay_steps,
        weight_decay=args.weight_decay,
        clip=args.clip,
        mtp_weight=args.mtp_weight,
        balance_alpha=args.balance_alpha,
        bias_gamma=args.bias_gamma,
        indexer_weight=args.indexer_weight,
        passkey=args.passkey,
        activation_checkpointing=args.activation_checkpointing,
        seed=args.seed,
        log_every=args.log_every,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        save_every=args.save_every,
        keep=args.keep,
        stop_after=args.stop_after,
        threads=args.threads,
        progress=not args.quiet,
        resume=args.resume,
    )
    result = train(cfg)
    if result.eval:
        e = result.eval
        print(
            f"held-out loss {e['eval_loss']:.4f}, perplexity {e['eval_ppl']:.2f} "
            f"over {e['eval_tokens']} tokens"
        )
        print(f"model: {result.model_dir}")
    else:
        print(f"stopped at step {result.step}; continue with --resume")
    return 0
