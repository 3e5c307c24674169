"""The root conversation, kept within the root model's window.

Every turn adds the model's reply and the feedback on what its code did. Left alone, the
conversation grows until it no longer fits, and every turn re-sends all of it. Two things
keep it bounded:

- **Per-message bounds.** Each reply and each feedback message is kept in the history cut
  to `RLMConfig.history_reply_chars` / `history_feedback_chars` (head and tail, with a
  marker). The engine still runs the full reply's code and the trajectory still records
  the full reply; only what is re-sent on later turns is bounded.
- **Compaction.** Before a call whose prompt would pass `compact_at_fraction` of the
  window (estimated), older turns are replaced by a deterministic digest: the system
  prompt, the question (with the worked example, if any), the first turn and the last
  `history_keep_turns` turns stay verbatim; the turns between them become one line each
  (the code's first line, what it printed, cut short) inside the feedback of the first
  turn. The REPL is untouched, so every variable those turns created still exists, and
  the digest says so.

If the provider still reports an overflow, the policy compacts harder and retries once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm_integrations.core.parsing import parse_reply
from rlm_integrations.lm.protocol import Message
from rlm_integrations.lm.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens
from rlm_integrations.repl.worker.output import truncate_middle

__all__ = ["ASSUMED_WINDOW_TOKENS", "Conversation", "HistoryLimits"]

ASSUMED_WINDOW_TOKENS = 128_000
"""The window assumed for a root model that does not report one."""

_REPLY_RESERVE_TOKENS = 1_024
_DIGEST_HEADER = (
    "[Earlier turns were compacted to keep this conversation within the model's window. The REPL kept "
    "everything: every variable those turns created still exists, so print it again if you need details.]"
)
_ENTRY_CODE_CHARS = 160
_ENTRY_OUTPUT_CHARS = 240
_EMERGENCY_MESSAGE_CHARS = 2_000


@dataclass(frozen=True)
class HistoryLimits:
    """How much of the root conversation is kept (see the module docstring).

    Attributes:
        reply_chars: bound on each model reply as kept in the history.
        feedback_chars: bound on each feedback message as kept in the history.
        compact_at_fraction: compact when the prompt would pass this fraction of the
            usable window (the window less room for the reply).
        keep_turns: recent turns kept verbatim when compacting.
        window_tokens: the window to assume when the model reports none.
        digest_chars: bound on the digest of compacted turns (older entries are dropped
            and counted first).
    """

    reply_chars: int = 20_000
    feedback_chars: int = 20_000
    compact_at_fraction: float = 0.75
    keep_turns: int = 4
    window_tokens: int = ASSUMED_WINDOW_TOKENS
    digest_chars: int = 8_000

    @classmethod
    def from_config(cls, config: Any) -> HistoryLimits:
        """The limits an `RLMConfig` sets (fields it lacks keep their defaults)."""
        defaults = cls()
        return cls(
            reply_chars=getattr(config, "history_reply_chars", defaults.reply_chars),
            feedback_chars=getattr(config, "history_feedback_chars", defaults.feedback_chars),
            compact_at_fraction=getattr(config, "compact_at_fraction", defaults.compact_at_fraction),
            keep_turns=getattr(config, "history_keep_turns", defaults.keep_turns),
            window_tokens=getattr(config, "history_window_tokens", None) or defaults.window_tokens,
        )


@dataclass
class _Turn:
    """One model reply and the user message that followed it (None until it arrives)."""

    number: int
    reply: str
    reply_tokens: int
    feedback: str | None = None
    feedback_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.reply_tokens + self.feedback_tokens + 2 * MESSAGE_OVERHEAD_TOKENS


@dataclass
class _Digest:
    """One line per compacted turn, bounded; the oldest lines go first."""

    entries: list[str] = field(default_factory=list)
    omitted: int = 0
    first: int | None = None
    last: int | None = None

    def add(self, turn: _Turn) -> None:
        self.entries.append(_entry(turn))
        self.first = turn.number if self.first is None else self.first
        self.last = turn.number

    def fit(self, chars: int) -> None:
        while self.entries and sum(len(e) + 1 for e in self.entries) > chars:
            self.entries.pop(0)
            self.omitted += 1

    def text(self) -> str:
        if self.first is None:
            return ""
        lines = [_DIGEST_HEADER, f"Turns {self.first}-{self.last}, in short:"]
        if self.omitted:
            lines.append(f"({self.omitted} earlier of these turns are not listed.)")
        lines.extend(self.entries)
        return "\n".join(lines)


def _entry(turn: _Turn) -> str:
    blocks = parse_reply(turn.reply).code_blocks
    if blocks:
        code = " | ".join(line.strip() for line in blocks[0].strip().splitlines() if line.strip())
        what = f"ran `{truncate_middle(code, _ENTRY_CODE_CHARS)}`"
        if len(blocks) > 1:
            what += f" (+{len(blocks) - 1} more blocks)"
    else:
        what = f"replied `{truncate_middle(' '.join(turn.reply.split()), _ENTRY_CODE_CHARS)}`"
    result = " ".join((turn.feedback or "").split())
    return f"- Turn {turn.number}: {what} -> {truncate_middle(result, _ENTRY_OUTPUT_CHARS)}"


class Conversation:
    """The root conversation as a head (system, example, question), turns, and a digest.

    Args:
        limits: the bounds to keep.
        count_tokens: the root model's token counter (an estimate is used if it fails).
        window: the root model's window in tokens, or None (then `limits.window_tokens`).
    """

    def __init__(
        self, limits: HistoryLimits, count_tokens: Callable[[str], int] | None = None, window: int | None = None
    ) -> None:
        self.limits = limits
        self._count = count_tokens
        self.window = window or limits.window_tokens
        self.head: list[Message] = []
        self._head_tokens = 0
        self.turns: list[_Turn] = []
        self.digest = _Digest()
        self._kept_first = 0  # turns kept verbatim before the digest (the first turn, once compacted)
        self._turn_numbers = 0
        self.compactions = 0
        # Kept up to date as turns arrive, so a long run's turn costs the same as its first:
        self._turn_tokens = 0
        self._digest_tokens = 0
        self._rendered: list[Message] | None = None

    # -- building --------------------------------------------------------------------------
    def start(self, head: list[Message]) -> None:
        """Begin with the system prompt, any worked example, and the question."""
        self.head = [{"role": m["role"], "content": m["content"]} for m in head]
        self._head_tokens = sum(self.tokens_of(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in self.head)
        self.turns = []
        self.digest = _Digest()
        self._kept_first = 0
        self._turn_numbers = 0
        self._changed()

    def _changed(self) -> None:
        """Recount after a change to earlier messages (compaction, a new head): rare, so a full pass."""
        self._turn_tokens = sum(t.tokens for t in self.turns)
        digest = self.digest.text()
        self._digest_tokens = self.tokens_of(digest) if digest else 0
        self._rendered = None

    def add_reply(self, text: str) -> None:
        """Append a model reply (bounded)."""
        kept = truncate_middle(text, self.limits.reply_chars)
        self._turn_numbers += 1
        turn = _Turn(self._turn_numbers, kept, self.tokens_of(kept))
        self.turns.append(turn)
        self._turn_tokens += turn.reply_tokens + MESSAGE_OVERHEAD_TOKENS
        if self._rendered is not None:
            self._rendered.append({"role": "assistant", "content": kept})

    def add_user(self, text: str) -> str:
        """Append a user message (merged into the previous one if that is a user message too); returns it bounded."""
        if not self.turns:  # before any reply: part of the question
            last = self.head[-1]
            last["content"] = last["content"] + "\n\n" + text
            self._head_tokens += self.tokens_of(text)
            self._rendered = None
            return text
        turn = self.turns[-1]
        first = turn.feedback is None
        combined = text if first else f"{turn.feedback}\n\n{text}"
        turn.feedback = truncate_middle(combined, self.limits.feedback_chars)
        old_tokens = turn.feedback_tokens
        turn.feedback_tokens = self.tokens_of(turn.feedback)
        self._turn_tokens += turn.feedback_tokens - old_tokens + (MESSAGE_OVERHEAD_TOKENS if first else 0)
        if self._rendered is not None and len(self.turns) > self._kept_first:
            message: Message = {"role": "user", "content": turn.feedback}
            if first:
                self._rendered.append(message)
            else:
                self._rendered[-1] = message
        else:
            self._rendered = None  # the digest rides on this turn's feedback: render again
        return truncate_middle(text, self.limits.feedback_chars)

    # -- reading ---------------------------------------------------------------------------
    def messages(self) -> list[Message]:
        """The messages to send, in order (roles alternate after the system prompt); a new list."""
        if self._rendered is None:
            self._rendered = self._render()
        return list(self._rendered)

    def _render(self) -> list[Message]:
        out: list[Message] = [{"role": m["role"], "content": m["content"]} for m in self.head]
        digest = self.digest.text()
        if digest and self._kept_first == 0:
            out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + digest}
        for index, turn in enumerate(self.turns):
            out.append({"role": "assistant", "content": turn.reply})
            if turn.feedback is not None:
                feedback = turn.feedback
                if digest and index == self._kept_first - 1:
                    feedback = feedback + "\n\n" + digest
                out.append({"role": "user", "content": feedback})
        return out

    def tokens(self) -> int:
        """The estimated prompt size of `messages()` in tokens."""
        return self._head_tokens + self._turn_tokens + self._digest_tokens

    def tokens_of(self, text: str) -> int:
        """Tokens of `text` by the model's counter, or by the chars/4 estimate."""
        if self._count is not None:
            try:
                return int(self._count(text))
            except Exception:  # a counter that fails must not end the run
                self._count = None
        return estimate_tokens(text)

    @property
    def usable_tokens(self) -> int:
        """The window less room for the reply."""
        return self.window - min(_REPLY_RESERVE_TOKENS, self.window // 4)

    @property
    def threshold(self) -> int:
        """Compact once the prompt passes this many tokens."""
        return int(self.usable_tokens * self.limits.compact_at_fraction)

    # -- compaction ------------------------------------------------------------------------
    def fit(self) -> bool:
        """Compact if the prompt is past the threshold; returns True if anything changed.

        Turns are moved into the digest until the prompt is under half the threshold, so a
        long run compacts now and then rather than on every turn.
        """
        if self.tokens() <= self.threshold:
            return False
        return self.compact(self.limits.keep_turns, target=self.threshold // 2, limit=self.threshold)

    def compact(self, keep_turns: int, *, target: int, limit: int, emergency: bool = False) -> bool:
        """Move turns into the digest, keeping the first and the last `keep_turns`.

        Turns move (oldest first) until the prompt is under `target` tokens. If it is still
        over `limit`, fewer recent turns are kept (down to one), and then the kept messages
        are cut shorter. With `emergency` (the provider refused the prompt as too long) the
        digest gets a quarter of its bound and every kept message a few thousand characters.
        """
        changed = False
        if self.turns and self._kept_first == 0 and len(self.turns) > max(1, keep_turns) + 1:
            self._kept_first = 1
        keep = max(1, keep_turns)
        digest_chars = self.limits.digest_chars // (4 if emergency else 1)
        digest_chars = min(digest_chars, max(500, limit // 2))  # about an eighth of the limit (4 chars a token)
        before = (len(self.digest.entries), self.digest.omitted)
        while True:
            movable = len(self.turns) - self._kept_first - keep
            if movable > 0 and self.tokens() > target:
                self.digest.add(self.turns.pop(self._kept_first))
                self.digest.fit(digest_chars)
                self._changed()
                changed = True
            elif self.tokens() > limit and keep > 1:
                keep -= 1
            else:
                break
        self.digest.fit(digest_chars)
        changed = changed or (len(self.digest.entries), self.digest.omitted) != before
        if emergency or self.tokens() > limit:
            changed = self._shrink_messages(limit, emergency) or changed
        self._changed()
        if changed:
            self.compactions += 1
        return changed

    def _shrink_messages(self, limit: int, emergency: bool) -> bool:
        """Cut the kept replies and feedback to an equal share of what `limit` leaves after the head and digest."""
        digest = self.digest.text()
        room = limit - self._head_tokens - (self.tokens_of(digest) if digest else 0)
        share = max(500, room * 4 // max(1, 2 * len(self.turns)))  # characters, at about four per token
        if emergency:
            share = min(share, _EMERGENCY_MESSAGE_CHARS)
        changed = False
        for turn in self.turns:
            if len(turn.reply) > share:
                turn.reply = truncate_middle(turn.reply, share)
                turn.reply_tokens = self.tokens_of(turn.reply)
                changed = True
            if turn.feedback is not None and len(turn.feedback) > share:
                turn.feedback = truncate_middle(turn.feedback, share)
                turn.feedback_tokens = self.tokens_of(turn.feedback)
                changed = True
        self._changed()
        return changed
