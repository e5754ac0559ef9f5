"""A tiny random-weight causal language model, built locally (no download from any hub).

Used by the LLM tests, ``bench/llm_bench.py`` and the demo: a GPT-2 architecture with a few layers
and a byte-level BPE tokenizer trained on a handful of sentences, saved as a Hugging Face model
directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a chat
template) exactly like a real model, so it goes through the same packaging and serving path.

Run ``python -m modeldeploy_runtime.tiny_lm DEST`` to write one. transformers/tokenizers/torch are
imported inside the function.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

EOS = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "large language models as a service on kubernetes",
    "triton inference server streams tokens to the client",
    "hello world, this is a tiny model with random weights",
    "what is the capital of france? paris is the capital of france.",
    "user assistant system: answer the question in one sentence.",
]


def build_tiny_lm(
    dest: str | Path, *, seed: int = 0, layers: int = 2, hidden: int = 64, context: int = 1024
) -> Path:
    """Write the model directory to ``dest`` (created) and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # The alphabet is the characters of the sentences only: every token decodes to whole characters.
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[EOS])
    tok.train_from_iterator(SENTENCES, trainer)
    fast: Any = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call,unused-ignore]
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = context
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    eos_id = int(fast.convert_tokens_to_ids(EOS))
    config = GPT2Config(
        vocab_size=len(fast), n_positions=context, n_embd=hidden, n_layer=layers, n_head=4,
        bos_token_id=eos_id, eos_token_id=eos_id, initializer_range=0.2,
    )  # fmt: skip
    model: Any = GPT2LMHeadModel(config)
    model.eval()
    model.generation_config.pad_token_id = eos_id
    model.save_pretrained(out, safe_serialization=True)
    return out


if __name__ == "__main__":
    print(build_tiny_lm(sys.argv[1] if len(sys.argv) > 1 else "tiny-lm"))
