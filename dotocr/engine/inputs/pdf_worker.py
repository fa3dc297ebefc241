"""PDFium in a process of its own, so that a PDF built to take minutes or gigabytes costs only this process.

`documents.PdfDocument` starts this file as a script (`python pdf_worker.py MEMORY_BYTES`) and talks to it over
its standard input and output; a page that runs past its deadline, or a caller that gives up, ends with the
process killed, and a page that needs more memory than MEMORY_BYTES ends with it dying of its address-space
limit (Linux and other systems with RLIMIT_AS; on Windows the deadline is the only bound). Either way the caller
gets one sentence and PDFium's global state dies with the process: nothing is left holding a lock.

It runs outside the package, on the standard library and pypdfium2 only, so starting it costs about 0.1 s.

The protocol: every message is a 4-byte big-endian length, that many bytes of a JSON object, then, when the
object has a `size`, that many bytes of payload. Requests, each answered by one reply:

- `{"op": "open", "path": P}` or `{"op": "open", "size": N}` + the PDF's bytes -> `{"pages": COUNT}`
- `{"op": "size", "page": I}` -> `{"width": POINTS, "height": POINTS}` (I counts from 0)
- `{"op": "render", "page": I, "scale": S}` -> `{"width", "height", "stride", "mode", "raw", "size"}` + pixels

A failure is `{"error": KIND, "code": PDFIUM_ERROR_CODE}`; KIND is "pdfium", "memory", "request", or "missing"
(pypdfium2 is not installed).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from typing import Any, BinaryIO

MAX_HEADER = 1 << 16


def read_message(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """One message from `stream`, or None at its end (the other side closed it or died)."""
    prefix = _read_exactly(stream, 4)
    if prefix is None:
        return None
    (length,) = struct.unpack(">I", prefix)
    if length > MAX_HEADER:
        raise ValueError(f"message header of {length} bytes")
    raw = _read_exactly(stream, length)
    if raw is None:
        return None
    header = json.loads(raw)
    size = int(header.get("size", 0))
    payload = _read_exactly(stream, size) if size else b""
    if payload is None:
        return None
    return header, payload


def write_message(stream: BinaryIO, header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    if payload:
        header = {**header, "size": len(payload)}
    raw = json.dumps(header).encode("utf-8")
    stream.write(struct.pack(">I", len(raw)) + raw)
    if payload:
        stream.write(payload)
    stream.flush()


def _read_exactly(stream: BinaryIO, count: int) -> bytes | None:
    chunks, left = [], count
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _limit_memory(limit: int) -> None:
    """Cap this process's address space (PDFium then fails its allocation and the process dies), and keep a
    dying process from writing a core file the size of that space."""
    try:
        import resource
    except ImportError:  # Windows: the caller's deadline is the bound
        return
    for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_AS", limit)):
        kind = getattr(resource, name, None)
        if kind is not None:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(kind, (value, value))


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    try:
        import pypdfium2 as pdfium
        import pypdfium2.internal as pdfium_i
    except ImportError:  # a broken install: every request says so
        while read_message(requests) is not None:
            write_message(replies, {"error": "missing"})
        return
    document: Any = None
    while (message := read_message(requests)) is not None:
        header, payload = message
        try:
            op = header.get("op")
            if op == "open":
                if document is not None:
                    document.close()
                document = pdfium.PdfDocument(payload if header.get("size") else header["path"])
                write_message(replies, {"pages": len(document)})
            elif op == "size":
                width, height = document[int(header["page"])].get_size()
                write_message(replies, {"width": width, "height": height})
            elif op == "render":
                page = document[int(header["page"])]
                bitmap = page.render(scale=float(header["scale"]))
                reply = {"width": bitmap.width, "height": bitmap.height, "stride": bitmap.stride,
                         "mode": pdfium_i.BitmapTypeToStrReverse[bitmap.format], "raw": bitmap.mode}
                write_message(replies, reply, memoryview(bitmap.buffer).cast("B"))
                bitmap.close()
                page.close()
            else:
                write_message(replies, {"error": "request"})
        except pdfium.PdfiumError as exc:
            write_message(replies, {"error": "pdfium", "code": getattr(exc, "err_code", None)})
        except MemoryError:
            write_message(replies, {"error": "memory"})
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OSError):
            write_message(replies, {"error": "request"})


def main(argv: list[str]) -> int:
    _limit_memory(int(argv[1]) if len(argv) > 1 else 0)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print, ours or a library's, never in the replies
    _serve(sys.stdin.buffer, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
