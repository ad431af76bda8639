"""Incremental parser for XML tool calls, robust to tags split anywhere across stream chunks."""

from __future__ import annotations

import re
from dataclasses import dataclass

OPEN = "<function_calls>"
CLOSE = "</function_calls>"
_INVOKE_OPEN = re.compile(r"<invoke\s+name\s*=\s*\"([^\"]*)\"\s*>")
_INVOKE_CLOSE = "</invoke>"
_NON_SPACE = re.compile(r"\S")
_PARAM = re.compile(r"\s*<parameter\s+name\s*=\s*\"([^\"]*)\"\s*>(.*?)</parameter>", re.DOTALL)


@dataclass(frozen=True)
class XmlText:
    text: str


@dataclass(frozen=True)
class XmlCall:
    name: str
    parameters: dict[str, str]


@dataclass(frozen=True)
class XmlError:
    """A block or invoke the model got wrong; reported back to the model as an invalid call."""

    name: str
    message: str


XmlItem = XmlText | XmlCall | XmlError


def _partial_suffix(buffer: str, tag: str) -> int:
    """Length of the longest suffix of `buffer` that is a proper prefix of `tag`."""
    for size in range(min(len(tag) - 1, len(buffer)), 0, -1):
        if buffer.endswith(tag[:size]):
            return size
    return 0


def _parse_invoke(element: str) -> XmlItem:
    head = _INVOKE_OPEN.match(element)
    if head is None:
        return XmlError("", f"malformed <invoke> tag: {element[:80]!r}")
    name = head.group(1).strip()
    if not name:
        return XmlError("", "<invoke> without a tool name")
    body = element[head.end() : -len(_INVOKE_CLOSE)]
    params: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        match = _PARAM.match(body, pos)
        if match is None:
            if body[pos:].strip():
                return XmlError(name, f'unexpected content in <invoke name="{name}">: {body[pos : pos + 80]!r}')
            break
        params[match.group(1)] = match.group(2)
        pos = match.end()
    return XmlCall(name, params)


class XmlCallParser:
    """Feed text chunks, get text and calls back in order; `finish()` flushes at end of stream.

    Outside a block, text is released at once except a trailing piece that could start the
    opening tag. Inside a block, each <invoke> is returned as soon as its closing tag arrives, so
    tools can start while the model is still writing.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._in_block = False
        self._scanned = 0

    def feed(self, chunk: str) -> list[XmlItem]:
        self._buffer += chunk
        items: list[XmlItem] = []
        while True:
            if not self._in_block:
                index = self._buffer.find(OPEN)
                if index < 0:
                    keep = _partial_suffix(self._buffer, OPEN)
                    text, self._buffer = (
                        self._buffer[: len(self._buffer) - keep],
                        self._buffer[len(self._buffer) - keep :],
                    )
                    if text:
                        items.append(XmlText(text))
                    return items
                if index:
                    items.append(XmlText(self._buffer[:index]))
                self._consume(index + len(OPEN))
                self._in_block = True
                continue
            items_done = self._feed_block(items)
            if items_done:
                return items

    def _feed_block(self, items: list[XmlItem]) -> bool:
        """One step inside a block; True when more input is needed.

        Searches resume where the last one stopped (`_scanned`), so a long parameter value that
        arrives in many small chunks costs linear, not quadratic, time.
        """
        buf = self._buffer
        first = _NON_SPACE.search(buf)
        if first is None:
            return True
        start = first.start()
        if buf.startswith(CLOSE, start):
            self._consume(start + len(CLOSE))
            self._in_block = False
            return False
        resume = max(start, self._scanned - len(CLOSE))
        invoke_at = buf.find("<invoke", start)
        close_at = buf.find(CLOSE, resume)
        if invoke_at < 0 or (0 <= close_at < invoke_at):
            if close_at >= 0:
                # Stray text inside a block is dropped up to the closing tag.
                items.append(XmlError("", f"unexpected content in <function_calls>: {buf[start:close_at][:80]!r}"))
                self._consume(close_at)
                return False
            self._scanned = len(buf)
            return True
        end = buf.find(_INVOKE_CLOSE, max(invoke_at, self._scanned - len(_INVOKE_CLOSE)))
        if close_at > invoke_at and (end < 0 or end > close_at):
            items.append(XmlError("", "unterminated <invoke> inside <function_calls>"))
            self._consume(close_at)
            return False
        if end < 0:
            self._scanned = len(buf)
            return True
        if invoke_at > start:
            items.append(XmlError("", f"unexpected content in <function_calls>: {buf[start:invoke_at][:80]!r}"))
        items.append(_parse_invoke(buf[invoke_at : end + len(_INVOKE_CLOSE)]))
        self._consume(end + len(_INVOKE_CLOSE))
        return False

    def _consume(self, upto: int) -> None:
        self._buffer = self._buffer[upto:]
        self._scanned = 0

    def finish(self) -> list[XmlItem]:
        items = self.feed("")
        if self._in_block:
            items.append(XmlError("", "unterminated <function_calls> block (missing </function_calls>)"))
        elif self._buffer:
            items.append(XmlText(self._buffer))
        self._consume(len(self._buffer))
        self._in_block = False
        return items
