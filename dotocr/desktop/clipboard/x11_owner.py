"""The X11 clipboard's owner: a small process that holds CLIPBOARD and serves text and HTML until another program
takes it, as xclip does (xclip serves one target only, so a table could not be offered as HTML and text at once).

`python -m dotocr.desktop.clipboard.x11_owner` reads {"text": ..., "html": ...} (JSON) on standard input, detaches
(a second fork, so the caller reaps its child at once and the owner outlives the tray), takes the selection and
writes "owned" (or "error: SENTENCE") on standard output, then closes it and serves:

- TARGETS, TIMESTAMP;
- UTF8_STRING, text/plain;charset=utf-8, text/plain and STRING (Latin-1, unrepresentable characters as "?");
- text/html (a whole UTF-8 document), when there is HTML;
- anything larger than one X request in INCR chunks (ICCCM 2.7.2).

It exits when another client owns the selection and its last INCR transfer is done (or stalled for 10 s), or
when the X server goes away.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import Any

STALLED_TRANSFER_S = 10.0


class SelectionOwner:
    """Owns CLIPBOARD on the display in $DISPLAY and answers conversion requests for it."""

    def __init__(self, text: str, html: str | None) -> None:
        from Xlib import X, Xatom
        from Xlib.display import Display

        self.X, self.Xatom = X, Xatom
        self.display = Display()
        self.display.set_error_handler(lambda *_args: None)  # a requestor that vanished mid-transfer is not fatal
        atom = self.display.intern_atom
        self.clipboard = atom("CLIPBOARD")
        self.targets_atom, self.timestamp_atom, self.incr = atom("TARGETS"), atom("TIMESTAMP"), atom("INCR")
        utf8 = atom("UTF8_STRING")
        encoded = text.encode("utf-8")
        self.data: dict[int, tuple[int, bytes]] = {
            utf8: (utf8, encoded),
            atom("text/plain;charset=utf-8"): (atom("text/plain;charset=utf-8"), encoded),
            atom("text/plain"): (atom("text/plain"), encoded),
            Xatom.STRING: (Xatom.STRING, text.encode("latin-1", errors="replace")),
        }
        if html is not None:
            self.data[atom("text/html")] = (atom("text/html"), html.encode("utf-8"))
        self.chunk = max(4096, self.display.display.info.max_request_length * 4 - 1024)
        self.transfers: dict[tuple[int, int], list[Any]] = {}
        self.window = self.display.screen().root.create_window(
            0, 0, 1, 1, 0, X.CopyFromParent, event_mask=X.PropertyChangeMask)
        self.time = self._server_time()
        self.window.set_selection_owner(self.clipboard, self.time)
        self.display.flush()
        owner = self.display.get_selection_owner(self.clipboard)
        if getattr(owner, "id", owner) != self.window.id:
            raise RuntimeError("another program kept the clipboard")

    def _server_time(self) -> int:
        """The X server's time, from our own property change (ICCCM asks for a real time, not CurrentTime)."""
        self.window.change_property(self.targets_atom, self.Xatom.ATOM, 32, [], self.X.PropModeAppend)
        self.display.flush()
        while True:
            event = self.display.next_event()
            if event.type == self.X.PropertyNotify and event.window.id == self.window.id:
                return event.time

    def serve(self) -> None:
        """Answer requests until the selection is taken and every transfer is done."""
        X = self.X
        cleared_at: float | None = None
        while True:
            if cleared_at is not None:
                if not self.transfers or time.monotonic() - cleared_at > STALLED_TRANSFER_S:
                    return
                if not self.display.pending_events():
                    select.select([self.display.fileno()], [], [], 0.5)
                    if not self.display.pending_events():
                        continue
            event = self.display.next_event()
            if event.type == X.SelectionRequest:
                self._answer(event)
            elif event.type == X.SelectionClear and event.atom == self.clipboard:
                cleared_at = time.monotonic()
            elif event.type == X.PropertyNotify and event.state == X.PropertyDelete:
                self._next_chunk(event)

    def _answer(self, request: Any) -> None:
        from Xlib.protocol import event as xevent

        X = self.X
        prop = request.property if request.property != X.NONE else request.target  # obsolete clients send None
        requestor = request.requestor
        if request.time != X.CurrentTime and request.time < self.time:
            prop = X.NONE  # a request from before we owned the selection
        elif request.target == self.targets_atom:
            offered = [self.targets_atom, self.timestamp_atom, *self.data]
            requestor.change_property(prop, self.Xatom.ATOM, 32, offered)
        elif request.target == self.timestamp_atom:
            requestor.change_property(prop, self.Xatom.INTEGER, 32, [self.time])
        elif request.target in self.data:
            kind, payload = self.data[request.target]
            if len(payload) > self.chunk:
                requestor.change_attributes(event_mask=X.PropertyChangeMask)
                requestor.change_property(prop, self.incr, 32, [len(payload)])
                self.transfers[(requestor.id, prop)] = [requestor, kind, payload, 0]
            else:
                requestor.change_property(prop, kind, 8, payload)
        else:
            prop = X.NONE
        notify = xevent.SelectionNotify(time=request.time, requestor=requestor, selection=request.selection,
                                        target=request.target, property=prop)
        requestor.send_event(notify, event_mask=0)
        self.display.flush()

    def _next_chunk(self, event: Any) -> None:
        """The requestor deleted the property: the next INCR chunk, and a zero-length one at the end."""
        key = (event.window.id, event.atom)
        transfer = self.transfers.get(key)
        if transfer is None:
            return
        requestor, kind, payload, offset = transfer
        piece = payload[offset:offset + self.chunk]
        requestor.change_property(event.atom, kind, 8, piece)
        transfer[3] = offset + len(piece)
        if not piece:
            del self.transfers[key]
            requestor.change_attributes(event_mask=0)
        self.display.flush()


def main() -> int:
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    if os.fork() > 0:
        os._exit(0)  # the caller reaps this child at once; the owner below is adopted by init
    os.setsid()
    try:
        owner = SelectionOwner(request["text"], request.get("html"))
    except Exception as exc:
        print(f"error: {exc}", flush=True)
        return 1
    print("owned", flush=True)
    quiet = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(quiet, stream)  # the caller stops waiting once standard output closes
    try:
        owner.serve()
    except Exception:  # the X server went away: nothing left to serve
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
