"""A cheap, tokenizer-free token estimate.

Real tokenizers cost time (and for many providers are not available offline), while the
engine only needs a size it can budget with and compare against a context window. The
estimate is about one token per four bytes of UTF-8: exactly `ceil(len(text) / 4)` for
ASCII text, and proportionally more for text outside ASCII (accented letters, CJK, emoji),
where real tokenizers also spend more tokens per character.

It runs in constant time for ASCII strings (CPython records that a string is ASCII) and in
one `encode` pass otherwise, so a 20 MB context costs milliseconds at most.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "estimate_messages_tokens", "estimate_tokens"]

_BYTES_PER_TOKEN = 4

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat template adds around each message (role markers, separators)."""


def estimate_tokens(text: str) -> int:
    """Estimate how many tokens `text` takes.

    Args:
        text: any string.

    Returns:
        `ceil(utf8_bytes / 4)`: 0 for the empty string and at least 1 for any other.
    """
    if not text:
        return 0
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return -(-size // _BYTES_PER_TOKEN)


def estimate_messages_tokens(messages: Iterable[Mapping[str, object]]) -> int:
    """Estimate the prompt tokens of a list of chat messages.

    Args:
        messages: chat messages with a `content` string each (other keys are ignored).

    Returns:
        The sum of each message's content estimate plus a small per-message overhead.
    """
    total = 0
    for message in messages:
        content = message.get("content")
        total += MESSAGE_OVERHEAD_TOKENS + (estimate_tokens(content) if isinstance(content, str) else 0)
    return total
