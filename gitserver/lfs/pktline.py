"""git's pkt-line framing, as the pure SSH LFS protocol uses it (``gitprotocol-common``).

Each packet is four hex digits of length (the four included) and the data; ``0000`` is a flush,
``0001`` a delimiter. Text packets end in LF, which readers drop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

FLUSH = b"0000"
DELIM = b"0001"
# The largest packet git allows: 65520 bytes in all, so 65516 of data.
MAX_DATA = 65516


class ProtocolError(Exception):
    """The peer sent something that is not pkt-line; the session cannot go on."""


def encode(data: bytes) -> bytes:
    if len(data) > MAX_DATA:
        raise ValueError("pkt-line data over 65516 bytes")
    return b"%04x" % (len(data) + 4) + data


def frame(data: bytes, size: int = MAX_DATA) -> bytes:
    """``data`` as consecutive data packets of ``size`` bytes each (the last one shorter)."""
    if not 0 < size <= MAX_DATA:
        raise ValueError(f"pkt-line data size {size} is not in 1..{MAX_DATA}")
    view = memoryview(data)
    header = b"%04x" % (size + 4)
    whole = len(view) - len(view) % size
    parts: list[bytes | memoryview] = []
    add = parts.append
    for start in range(0, whole, size):
        add(header)
        add(view[start:start + size])
    if whole < len(view):
        add(encode(bytes(view[whole:])))
    return b"".join(parts)


def text(line: str) -> bytes:
    return encode(line.encode() + b"\n")


class Packet:
    """One packet read: ``kind`` is "data", "flush" or "delim"."""

    __slots__ = ("data", "kind")

    def __init__(self, kind: str, data: bytes = b"") -> None:
        self.kind, self.data = kind, data

    @property
    def text(self) -> str:
        return self.data.removesuffix(b"\n").decode("utf-8", "replace")


ReadExactly = Callable[[int], Awaitable[bytes]]


async def read_packet(read: ReadExactly) -> Packet:
    """The next packet; EOFError at a clean end of input (between packets)."""
    head = await read(4)
    if not head:
        raise EOFError
    if len(head) < 4:
        raise ProtocolError("the connection ended inside a pkt-line header")
    try:
        length = int(head, 16)
    except ValueError:
        raise ProtocolError(f"not a pkt-line length: {head!r}") from None
    if length == 0:
        return Packet("flush")
    if length == 1:
        return Packet("delim")
    if length < 4 or length > MAX_DATA + 4:
        raise ProtocolError(f"bad pkt-line length {length}")
    data = await read(length - 4)
    if len(data) < length - 4:
        raise ProtocolError("the connection ended inside a pkt-line")
    return Packet("data", data)
