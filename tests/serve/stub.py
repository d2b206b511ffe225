"""Test doubles for the serve tests: a byte-level BPE tokenizer with the V4 chat tokens, and an
engine that spells fixed outputs (a DSML tool call, a reasoning answer) for prompts carrying a
trigger word, so those outputs really come out of the engine."""

import time

from helpers import mixed_config
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from trillion.chat.dsml import TOOLS_PROMPT
from trillion.chat.encoding import ASSISTANT, BOS, END_THINK, EOS, THINK, USER
from trillion.engine.engine import Engine
from trillion.tokenizer import Tokenizer

API_KEY = "test-key"
MODEL = "tiny-test"
MAX_BODY = 64 * 1024
SPECIAL = [BOS, EOS, USER, ASSISTANT, THINK, END_THINK, "｜DSML｜"]
CORPUS = ["Hello world, the weather in Paris is sunny today.", "héllo wörld ✓ 日本 ünïcödé",
          '<invoke name="get_weather">\n<parameter name="city" string="true">Paris</parameter>',
          "def add(a, b):\n    return a + b\n", "Let me check. The user wants 2+2.", TOOLS_PROMPT]
SCRIPTS = {
    "SCRIPT_TOOL": 'Let me check.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n'
                   '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
                   '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
                   "</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
    "SCRIPT_THINK": "The user wants 2+2 ✓.</think>It is 4, 日本.",
    "SCRIPT_TEXT": "héllo wörld ✓ 日本 and more text",
}
CFG = mixed_config(vocab_size=512)


def byte_tokenizer() -> Tokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=CFG.vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SPECIAL)
    tok.train_from_iterator(CORPUS * 20, trainer)
    out = Tokenizer(tok)
    assert out.token_id(BOS) == CFG.bos_token_id and out.token_id(EOS) == CFG.eos_token_id
    return out


class ScriptedEngine(Engine):
    """The engine, except that a request whose prompt holds a trigger word gets that script's
    tokens (then the end token) instead of the model's choice: everything else is the real path."""

    def __init__(self, model, tokenizer, scripts, **kw):
        super().__init__(model, **kw)
        self.tok = tokenizer
        self.scripts = {k: tokenizer.encode(v) + [self.eos] for k, v in scripts.items()}
        self._which: dict[int, list[int] | None] = {}

    def _emit(self, s, logits, token=None):
        if token is None:
            if s.request_id not in self._which:
                text = self.tok.decode(s.prompt_ids, skip_special_tokens=False)
                self._which[s.request_id] = next((v for k, v in self.scripts.items() if k in text), None)
            script = self._which[s.request_id]
            if script is not None:
                token = script[min(len(s.output_ids), len(script) - 1)]
        return super()._emit(s, logits, token)


def wait_idle(service, timeout=10.0):
    """Poll until the engine holds nothing: no sequence, no page, no slot, nothing queued."""
    deadline = time.monotonic() + timeout
    while not service.worker.idle():
        if time.monotonic() > deadline:
            eng = service.engine
            raise AssertionError(f"not idle: pages {eng.pool.pages_in_use()}, slots {eng.pool.slots_in_use()}, "
                                 f"waiting {len(eng.waiting)}, running {len(eng.running)}, "
                                 f"tickets {len(service.worker.tickets)}")
        time.sleep(0.02)
