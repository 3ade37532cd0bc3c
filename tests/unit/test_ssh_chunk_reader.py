"""git's stdout as the SSH daemon reads it: every byte, in order, with the pipe paused while
the reader is full. A real pipe, written by a real thread."""

from __future__ import annotations

import asyncio
import os
import threading

from gitserver.ssh.session import ChunkReader


def _writer(fd: int, payload: bytes) -> threading.Thread:
    def write() -> None:
        with os.fdopen(fd, "wb", buffering=0) as out:
            view = memoryview(payload)
            while view:
                view = view[out.write(view[:65536]) or 0:]

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_every_byte_arrives_in_order_and_reading_pauses_while_the_reader_is_full() -> None:
    payload = os.urandom(3 * 1024 * 1024)

    async def scenario() -> tuple[bytes, int, list[int]]:
        read_fd, write_fd = os.pipe()
        reader = ChunkReader(limit=128 * 1024)
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: reader, os.fdopen(read_fd, "rb", buffering=0))
        thread = _writer(write_fd, payload)
        pauses = 0
        sizes: list[int] = []
        received = bytearray()
        await asyncio.sleep(0.05)  # let the pipe fill the reader up to its limit
        while True:
            pauses += reader.paused
            data = await reader.read(100_000)
            if not data:
                break
            sizes.append(len(data))
            received += data
        transport.close()
        thread.join(10)
        return bytes(received), pauses, sizes

    received, pauses, sizes = asyncio.run(scenario())
    assert received == payload
    assert max(sizes) <= 100_000  # read(n) never hands on more than n
    assert pauses > 0  # the reader stopped the pipe while it held its limit


def test_what_was_read_before_the_writer_closed_is_still_handed_on() -> None:
    async def scenario() -> list[bytes]:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, b"last words")
        os.close(write_fd)
        reader = ChunkReader(limit=1024)
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: reader, os.fdopen(read_fd, "rb", buffering=0))
        chunks = [await reader.read(4), await reader.read(100), await reader.read(100)]
        transport.close()
        return chunks

    assert asyncio.run(scenario()) == [b"last", b" words", b""]
