"""modernbert_mini: ModernBERT, built step by step. Every module is one chapter's idea."""

from . import runtime

__version__ = "0.1.0"
