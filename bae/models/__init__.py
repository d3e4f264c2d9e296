"""Offline models of the embedded default: a tiny Qwen2 policy and its tokenizer (no downloads)."""

from bae.models.tiny import TAGS, build_model, build_tokenizer, load_tiny, save_tiny

__all__ = ["TAGS", "build_model", "build_tokenizer", "load_tiny", "save_tiny"]
