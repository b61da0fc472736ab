from __future__ import annotations

import pytest

from tests.observability.sse import Stream


@pytest.fixture
def sse():
    """Open SSE streams (``sse(url, headers)``); every one is closed at the end of the test."""
    opened: list[Stream] = []

    def open_stream(url: str, headers: dict[str, str] | None = None) -> Stream:
        stream = Stream.open(url, headers)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()
