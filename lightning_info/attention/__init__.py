"""Attention modules: entropy-guided multi-head attention and the chunked attention-entropy math."""

from lightning_info.attention.entropy_guided_attention import EntropyGuidedAttention
from lightning_info.functional.attention import attention_entropy_from_qk

__all__ = ["EntropyGuidedAttention", "attention_entropy_from_qk"]
