"""Incremental detokenization, stop strings and output rails for streaming.

Tokens arrive one at a time as raw bytes (a UTF-8 character may span several tokens). Text is
released only when it is certain: never half a character, never text that could still turn out
to be the start of a stop string, and, with a rail (hallmark.engine.rails), never a sentence the
rail has not checked. What is released is the rail's rewrite of the model's text.
"""

from __future__ import annotations

import codecs
import re

from hallmark.engine.rails import HumanClaimRail


class TextStream:
    def __init__(self, stop: tuple[str, ...] = (), rail: HumanClaimRail | None = None):
        self.stop = stop
        self.rail = rail
        self._longest = max((len(s) for s in stop), default=0)
        # One search for all the stops (leftmost match; at one position, the earlier stop in the list),
        # and one set of every stop's proper prefixes for the hold-back: the per-token cost follows
        # the length of the longest stop, not how many there are.
        self._pattern = re.compile("|".join(re.escape(s) for s in stop)) if stop else None
        self._prefixes = {s[:n] for s in stop for n in range(1, len(s))}
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""  # all decoded text so far (up to a stop string, once found)
        self._released = 0  # how much of _text has been handed out
        self._out: list[str] = []  # what was handed out: _text[:_released], as the rail rewrote it
        self.stop_found: str | None = None

    @property
    def text(self) -> str:
        """The text released so far (all of it, once finished): the model's, as the rail rewrote it."""
        return "".join(self._out)

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to release."""
        if self.stop_found is not None:
            return ""
        new_text = self._decoder.decode(piece)
        if not new_text:
            return ""
        search_from = max(0, len(self._text) - self._longest + 1)
        self._text += new_text
        if self.stop:
            hit = self._earliest_stop(search_from)
            if hit is not None:
                at, stop = hit
                self._text = self._text[:at]
                self.stop_found = stop
                return self._release(len(self._text))
        held = self._held_back()
        if self.rail is not None:
            held = max(held, self.rail.held_back(self._text[self._released :]))
        return self._release(len(self._text) - held)

    def finish(self) -> str:
        """End of generation: release everything still held back (it was not a stop string)."""
        if self.stop_found is None:
            self._text += self._decoder.decode(b"", final=True)
        out = self._release(len(self._text))
        if self.rail is not None and (owed := self.rail.finish()):
            self._out.append(owed)
            out += owed
        return out

    def _earliest_stop(self, search_from: int) -> tuple[int, str] | None:
        assert self._pattern is not None
        m = self._pattern.search(self._text, search_from)
        return (m.start(), m.group()) if m else None

    def _held_back(self) -> int:
        """Length of the longest unreleased suffix that is a proper prefix of some stop string."""
        pending = self._text[self._released :]
        for n in range(min(self._longest - 1, len(pending)), 0, -1):
            if pending[-n:] in self._prefixes:
                return n
        return 0

    def _release(self, upto: int) -> str:
        out = self._text[self._released : upto]
        self._released = max(self._released, upto)
        if out and self.rail is not None:
            out = self.rail.rewrite(out)
        self._out.append(out)
        return out
