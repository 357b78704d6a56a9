"""Backends turn token ids into next-token logits. Everything above them is shared."""

from hallmark.backends.base import Backend, BackendConfig

__all__ = ["Backend", "BackendConfig"]
