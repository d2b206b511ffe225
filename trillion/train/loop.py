"""`train(cfg)`: the whole run, from text to a checkpointed model.

Steps:
  1. a new run trains the tokenizer on the training split and saves it (RUN/tokenizer.json); a
     resumed run reuses it; the corpus is packed into sequences (dataset.py, data.py);
  2. a new model is built from the flavor (seeded init) with hash tables from token frequencies;
     a resumed one is loaded with its optimiser state, data cursor and rng from the last checkpoint;
  3. each step: next batch, learning rate from the schedule, loss (objective.py), backward,
     gradient clipping, Muon + AdamW steps, then the balancing-bias update outside the gradient;
  4. every `log_every` steps a metrics line, every `eval_every` a held-out evaluation, every
     `save_every` an atomic checkpoint (the last `keep` kept);
  5. at the end: a final checkpoint, the full held-out evaluation, RUN/model (the model alone, with
     its tokenizer and `training.json`, what `trillion eval` and the engine read) and the charts.

Resuming is exact: the losses after a resume equal those of an uninterrupted run (same threads).
`--resume --steps N` with N past the run's end extends it: the learning rate keeps the run's own
schedule (its cosine ends where it ended, `decay_steps`) and holds the floor for the new steps, so the
extended run equals an uninterrupted one with `--steps N --decay-steps <old end>`.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..assets import SHIPPED, shipped_model
from ..checkpoint import load_model, save_model
from ..config import ModelConfig
from ..errors import UnknownName, UserError
from ..flavors import FLAVORS
from . import balance, metrics, objective, optim, passkey, state
from .config import TrainConfig
from .data import Batches, sequences
from .dataset import prepare
from .tokenizer import BOS_ID, EOS_ID, load_tokenizer

TOKENIZER = "tokenizer.json"
CONFIG = "train_config.json"
MODEL = "model"
TRAINING_JSON = "training.json"


@dataclass
class TrainResult:
    run: Path
    model_dir: Path
    step: int
    eval: dict[str, float]
    first_eval: dict[str, float] | None


def train(cfg: TrainConfig) -> TrainResult:
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    existing = state.list_checkpoints(run)
    resuming = bool(cfg.resume and existing)
    if existing and not cfg.resume:
        raise UserError(
            f"{run}: already holds checkpoints (last: {existing[-1][1].name}); pass --resume to continue "
            "that run, or choose a new --out"
        )
    if resuming:
        cfg = _continue_run(run, cfg, existing[-1][0])
    (run / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    mcfg = model_config(cfg)
    tok = load_tokenizer(run / TOKENIZER) if resuming else None
    ds = prepare(
        cfg.data,
        vocab_size=mcfg.vocab_size,
        heldout=cfg.heldout,
        max_docs=cfg.max_docs,
        run_dir=run,
        tokenizer=tok,
    )
    if tok is None:
        ds.tokenizer.save(str(run / TOKENIZER))
    if ds.tokenizer.get_vocab_size() > mcfg.vocab_size:
        raise UserError(
            f"tokenizer has {ds.tokenizer.get_vocab_size()} tokens; the model's vocab is {mcfg.vocab_size}"
        )
    train_seqs, held_seqs = sequences(ds.train, cfg.seq_len), sequences(ds.heldout, cfg.seq_len)
    probe = objective.spread(held_seqs, cfg.eval_batches * cfg.batch)  # periodic evaluations

    log = metrics.MetricsLog(run)
    if resuming:
        model, opts, st, rng = state.load_checkpoint(
            existing[-1][1], lambda m: optim.build_optimizers(m, cfg)
        )
        torch.set_rng_state(rng["torch"])
        log.truncate_after(st.step)
        first_eval = None
    else:
        torch.manual_seed(cfg.seed)
        model = load_model(mcfg, seed=cfg.seed, dtype=torch.float32).train()
        balance.install_hash_tables(model, ds.token_counts(mcfg.vocab_size))
        opts = optim.build_optimizers(model, cfg)
        st = state.TrainerState(0, None, 0, {})
        log.truncate_after(-1)
        first_eval = objective.evaluate(model, probe, cfg.batch)
        log.write({"kind": "eval", "step": 0, "tokens": 0, **first_eval})
    if cfg.activation_checkpointing:
        objective.enable_activation_checkpointing(model)
    examples = None
    if cfg.passkey:
        examples = passkey.TrainingExamples(lambda t: ds.tokenizer.encode(t, add_special_tokens=False).ids, ds.train,
                                            cfg.seq_len + 1, BOS_ID, EOS_ID)
    batches = Batches(train_seqs, cfg.batch, cfg.seed, st.cursor)
    st.cursor = batches.cursor
    params = [p for p in model.parameters() if p.requires_grad]
    scored = balance.scored_gates(model)

    last = cfg.steps if cfg.stop_after is None else min(cfg.steps, st.step + cfg.stop_after)
    _describe(cfg, model, ds, train_seqs, held_seqs, resuming, st.step)
    bar = _progress(cfg, st.step, last)
    interval = metrics.Interval()
    while st.step < last:
        t0 = time.perf_counter()
        batch = batches.next()
        if examples is not None:  # seeded by the step: a resumed run draws the same examples
            batch = examples.mix(batch, cfg.passkey, random.Random(f"passkey:{cfg.seed}:{st.step}"))
        lr = optim.set_lr(opts, st.step, cfg)
        for opt in opts.values():
            opt.zero_grad(set_to_none=True)
        res = objective.compute(model, batch, cfg)
        res.loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip))
        for opt in opts.values():
            opt.step()
        for name, gate in scored:
            balance.update_bias(gate, res.counts[name], cfg.bias_gamma)
        st.step += 1
        n_tok = batch.shape[0] * (batch.shape[1] - 1)
        st.tokens += n_tok
        interval.add(res.parts, res.counts, n_tok, time.perf_counter() - t0)

        if st.step % cfg.log_every == 0 or st.step == last:
            rec = interval.record(
                step=st.step, tokens=st.tokens, lr=lr, grad_norm=grad_norm, epoch=batches.epoch_progress
            )
            log.write(rec)
            if bar is not None:
                bar.set_postfix(loss=f"{rec['ce']:.3f}", tok_s=f"{rec['tok_per_s']:.0f}", refresh=False)
        if bar is not None:
            bar.update(1)
        if cfg.eval_every and st.step % cfg.eval_every == 0 and st.step < cfg.steps:
            log.write(
                {
                    "kind": "eval",
                    "step": st.step,
                    "tokens": st.tokens,
                    **objective.evaluate(model, probe, cfg.batch),
                }
            )
            _plot(run, log, cfg)
        if st.step % cfg.save_every == 0 or st.step == last:
            _save(run, model, opts, st, cfg)
    if bar is not None:
        bar.close()

    final = {}
    model_dir = run / MODEL
    if st.step >= cfg.steps:
        final = objective.evaluate(model, held_seqs, cfg.batch)
        log.write({"kind": "eval", "step": st.step, "tokens": st.tokens, "final": True, **final})
        export(model, model_dir, run / TOKENIZER, cfg, final, ds)
    _plot(run, log, cfg)
    return TrainResult(run, model_dir, st.step, final, first_eval)


def model_config(cfg: TrainConfig) -> ModelConfig:
    """The run's model: a flavor name, a shipped model's name (its config.json: `demo` is the recipe of
    the shipped demo model) or a config.json path, with --vocab-size applied."""
    shipped = shipped_model(cfg.flavor)
    if cfg.flavor in FLAVORS:
        mcfg = FLAVORS[cfg.flavor]
    elif shipped is not None:
        mcfg = ModelConfig.from_file(shipped / "config.json")
    elif Path(cfg.flavor).is_file():
        mcfg = ModelConfig.from_file(cfg.flavor)
    else:
        raise UnknownName(
            f"{cfg.flavor!r} is neither a flavor ({', '.join(FLAVORS)}), a shipped model "
            f"({', '.join(SHIPPED)}) nor a config.json file"
        )
    return mcfg.replace(vocab_size=cfg.vocab_size) if cfg.vocab_size else mcfg


def _plot(run: Path, log: metrics.MetricsLog, cfg: TrainConfig) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn(
            "matplotlib is not installed: no loss.png / expert_load.png (pip install matplotlib)",
            stacklevel=2,
        )
        return
    records = log.read()
    metrics.plot_loss(
        records, run / metrics.LOSS_PNG, title=f"{Path(cfg.flavor).name} on {', '.join(cfg.data)}"
    )
    metrics.plot_expert_load(records, run / metrics.LOAD_PNG)


def _save(run: Path, model, opts, st: state.TrainerState, cfg: TrainConfig) -> None:
    rng = {"torch": torch.get_rng_state()}
    state.save_checkpoint(run, model, opts, st, rng, tokenizer_file=run / TOKENIZER, keep=cfg.keep)


def export(model, dest: Path, tokenizer_file: Path, cfg: TrainConfig, final: dict, ds) -> Path:
    """RUN/model: weights (hf layout), tokenizer and training.json (what `trillion eval` reproduces)."""
    save_model(model, dest, layout="hf", copy_files_from=tokenizer_file)  # + tokenizer/generation configs
    info = {
        "data": list(cfg.data),
        "heldout": cfg.heldout,
        "max_docs": cfg.max_docs,
        "seq_len": cfg.seq_len,
        "batch": cfg.batch,
        "steps": cfg.steps,
        "train_tokens": cfg.steps * cfg.batch * cfg.seq_len,
        "train_documents": ds.n_train_docs,
        "heldout_documents": ds.n_heldout_docs,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "eval": final,
        "train_config": cfg.to_dict(),
    }
    (dest / TRAINING_JSON).write_text(json.dumps(info, indent=2) + "\n")
    return dest


def _continue_run(run: Path, cfg: TrainConfig, done: int) -> TrainConfig:
    """The settings a resumed run goes on with: the run's own, with a later end if `cfg.steps` moves it.

    Refuses settings that would change the steps already taken (a resume would not be exact).
    """
    path = run / CONFIG
    if not path.is_file():
        return cfg
    before = TrainConfig.from_file(path)
    if cfg.steps != before.steps:
        if cfg.steps < max(before.steps, done):
            raise UserError(
                f"{path}: --resume with --steps {cfg.steps} would end the run before its {before.steps} steps; "
                "--steps can only grow (use --stop-after to stop early)"
            )
        if cfg.decay_steps is None:  # keep the run's schedule: the new steps run at its floor
            cfg = cfg.replace(decay_steps=before.decay_steps or before.steps)
        if cfg.progress:
            print(
                f"extending {run} from {before.steps} to {cfg.steps} steps: the learning rate keeps its cosine "
                f"to step {cfg.decay_steps} and then holds {cfg.lr * cfg.min_lr_ratio:g}",
                file=sys.stderr,
            )
    def schedule(c: TrainConfig) -> TrainConfig:  # decay_steps None means `steps`: compare what runs
        return c.replace(decay_steps=c.decay_steps or c.steps)

    diff = [k for k in schedule(before).trajectory_diff(schedule(cfg)) if k != "steps"]
    if diff:
        raise UserError(
            f"{path}: --resume with different settings ({', '.join(diff)}) would not continue the same run; "
            "use the original settings or a new --out"
        )
    return cfg


def _progress(cfg: TrainConfig, start: int, last: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(
        total=last,
        initial=start,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5 if interactive else 30.0,
    )


def _describe(cfg, model, ds, train_seqs, held_seqs, resuming: bool, step: int) -> None:
    if not cfg.progress:
        return
    n = sum(p.numel() for p in model.parameters())
    print(
        f"{'resuming' if resuming else 'training'} {cfg.flavor} ({n / 1e6:.2f}M parameters) "
        f"at step {step}/{cfg.steps}: "
        f"{ds.n_train_docs} train / {ds.n_heldout_docs} held-out documents, {train_seqs.shape[0]} / "
        f"{held_seqs.shape[0]} sequences of {cfg.seq_len} tokens, batch {cfg.batch}",
        file=sys.stderr,
    )
