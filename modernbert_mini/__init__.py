"""modernbert_mini: ModernBERT, built step by step. Every module is one chapter's idea.

    import modernbert_mini as mm
    from modernbert_mini.checkpoint import load_pretrained
    model, tokenizer, log = load_pretrained()  # the mini model that ships in the package
    mm.fill_mask(model, tokenizer, "for i in [MASK](len(items)):")
    mm.similarity(*mm.embed(model, tokenizer, ["import os", "import sys"]))  # (1, 1) cosine

ModernBERT-base itself: mm.ModernBertForMaskedLM.from_pretrained("answerdotai/ModernBERT-base")
(downloads from the Hugging Face hub). README.md, "Quickstart", shows fine-tuning and saving.

Importing the package loads torch, safetensors and tokenizers only; what only the notebooks
need (matplotlib, ipywidgets, IPython) is imported by the modules that use it (viz.py).
"""

from . import runtime
from .config import ModernBertConfig
from .hub import save_sentence_transformers
from .inference import MaskPrediction, embed, encode, fill_mask, num_parameters, similarity
from .model import (ModernBertForMaskedLM, ModernBertForSequenceClassification,
                    ModernBertForTokenClassification, ModernBertModel)
from .tokenizer import load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "ModernBertConfig",
    "ModernBertModel",
    "ModernBertForMaskedLM",
    "ModernBertForSequenceClassification",
    "ModernBertForTokenClassification",
    "load_tokenizer",
    "encode",
    "fill_mask",
    "embed",
    "similarity",
    "save_sentence_transformers",
    "num_parameters",
    "MaskPrediction",
    "runtime",
    "__version__",
]
