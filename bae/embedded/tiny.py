"""A tiny, offline causal LM for the embedded demo and the tests.

What: a byte-level tokenizer with no merges (built with the `tokenizers` library) and a randomly
initialised Qwen2 model of about 0.1M parameters, both saved with `save_pretrained` so any Hugging
Face tool (AutoTokenizer, AutoModelForCausalLM, TRL) loads them from a local folder.

Why this tokenizer: the library must train and test on a laptop with no network. With no merges,
every ASCII character is exactly one token (a digit, a letter, a space, a newline), so token offsets
are exact and mapping tokens to blocks via `return_offsets_mapping=True` is easy to check; any other
character becomes its UTF-8 bytes, so nothing is ever unknown and decode(encode(text)) == text for
all NFC text. The XML tags that delimit blocks (<reasoning>, </answer>, ...) are single tokens: a
policy emits a block boundary in one step, and the tags survive decode(skip_special_tokens=True)
because they are ordinary (non-special) added tokens.

Why byte-level and Qwen2's pipeline rather than a custom character vocabulary: transformers 5 maps
the `qwen2` model type to `Qwen2Tokenizer`, which rebuilds the backend from the vocabulary with its
own normalizer (NFC), pre-tokenizer (Qwen2 regex + ByteLevel) and decoder (ByteLevel) whenever
AutoTokenizer loads a folder holding a Qwen2 config. Building the tokenizer with exactly that
pipeline makes the tokenizer we build and the one AutoTokenizer reloads behave identically (the
tests check it), and gives the tiny model the same offset behaviour as real Qwen2.5 tokenizers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from bae.io import save_pretrained_dir

# Special tokens: skipped by decode(skip_special_tokens=True). The pad token is distinct from EOS.
PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|unk|>"  # declared for tools that expect one; byte-level encoding never produces it
EOS_TOKEN = "<|im_end|>"  # ends every chat turn, so generation stops at the end of the assistant turn
IM_START_TOKEN = "<|im_start|>"
ENDOFTEXT_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [PAD_TOKEN, UNK_TOKEN, ENDOFTEXT_TOKEN, IM_START_TOKEN, EOS_TOKEN]

# Block tags of the self-confidence format: one token each, kept by decode (not special).
TAGS = [
    "<reasoning>",
    "</reasoning>",
    "<answer>",
    "</answer>",
    "<analysis>",
    "</analysis>",
    "<confidence>",
    "</confidence>",
]

# Qwen2's pre-tokenization regex (the one Qwen2Tokenizer rebuilds with). Without merges it only
# decides where words split, never how many tokens a character gets.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen-style ChatML template, enough for TRL's conversational datasets.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of the bytes 0..255 used by byte-level BPE (GPT-2's mapping).

    Printable Latin-1 bytes stand for themselves; the others (control bytes, space, ...) are shifted
    to unused code points from 256 upward, in byte order. So 'a' is 'a' and a space is 'Ġ'.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, shift = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + shift))
            shift += 1
    return chars


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the tokenizer (deterministic, no files, no network).

    Ids: the special tokens first (pad = 0), then the 256 bytes in byte order (byte b has id 5 + b),
    then the tags. BPE with an empty merge list leaves every byte its own token.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + byte_alphabet())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    # Added tokens are matched in the raw text before pre-tokenization: each is one token whose
    # offsets cover the whole tag. The tags are normal tokens (kept by skip_special_tokens=True).
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=None,
        additional_special_tokens=[IM_START_TOKEN, ENDOFTEXT_TOKEN],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized for `tokenizer`, deterministic given `seed`.

    The global RNG state is restored afterwards, so building a model does not perturb the caller's
    random streams.
    """
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model.eval()


def save_tiny(path: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tokenizer and model and save both to `path` (a folder), atomically.

    Everything is written into a temporary folder beside `path` and renamed into place, so a reader
    never sees a half-written folder. An existing folder at `path` is replaced.
    """
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=seed)
    return save_pretrained_dir(path, tokenizer, model)


def load_tiny(path: str | os.PathLike) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """Load (model, tokenizer) saved by `save_tiny`, with the ordinary Auto classes."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    return model.eval(), tokenizer
