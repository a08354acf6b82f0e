"""modernbert_mini: ModernBERT, built step by step. Every module is one chapter's idea."""

from . import runtime
from .config import ModernBertConfig
from .model import (ModernBertForMaskedLM, ModernBertForSequenceClassification,
                    ModernBertForTokenClassification, ModernBertModel)

__version__ = "0.1.0"
