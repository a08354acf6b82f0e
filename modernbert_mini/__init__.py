"""modernbert_mini: ModernBERT, built step by step. Every module is one chapter's idea.

    import modernbert_mini as mm
    model = mm.ModernBertForMaskedLM.from_pretrained("answerdotai/ModernBERT-base")
    tokenizer = mm.load_tokenizer("answerdotai/ModernBERT-base")
    mm.fill_mask(model, tokenizer, "The capital of France is [MASK].")

Importing the package loads torch, safetensors and tokenizers only; what only the notebooks
need (matplotlib, ipywidgets, IPython) is imported by the modules that use it (viz.py).
"""

from . import runtime
from .config import ModernBertConfig
from .inference import MaskPrediction, embed, encode, fill_mask, num_parameters
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
    "num_parameters",
    "MaskPrediction",
    "runtime",
    "__version__",
]
