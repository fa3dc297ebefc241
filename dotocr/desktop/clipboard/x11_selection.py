"""The X11 clipboard with text and HTML at once, through our own selection owner (`x11_owner`, python-xlib).

Copying starts the owner process and waits until it holds CLIPBOARD, so when `copy` returns a paste anywhere gets
the new content; the owner keeps serving after our process ends, as xclip's does. Pasting asks the current owner
for UTF8_STRING directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from .base import ClipboardContent, ClipboardError, html_document

OWNER_TIMEOUT_S = 10.0
"""How long the owner may take to start and take the selection (a fresh Python on a loaded 2-core machine)."""
PASTE_TIMEOUT_S = 2.0


class X11SelectionClipboard:
    name = "X11 selection (text and HTML)"
    carries_html = True
    install_hint = "install python-xlib (`pip install python-xlib`)"

    @staticmethod
    def is_compatible() -> bool:
        return sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) and bool(os.environ.get("DISPLAY"))

    @staticmethod
    def is_installed() -> bool:
        return importlib.util.find_spec("Xlib") is not None

    def copy(self, content: ClipboardContent) -> None:
        request = {"text": content.text, "html": html_document(content.html) if content.html is not None else None}
        package_root = str(Path(__file__).resolve().parents[3])  # the folder holding `dotocr`, for a checkout too
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root,
                                                                        os.environ.get("PYTHONPATH")])))
        try:
            done = subprocess.run([sys.executable, "-m", "dotocr.desktop.clipboard.x11_owner"],
                                  input=json.dumps(request).encode("utf-8"), capture_output=True,
                                  timeout=OWNER_TIMEOUT_S, env=env, close_fds=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClipboardError(f"The clipboard's owner process did not start ({exc}).") from None
        answer = done.stdout.decode("utf-8", errors="replace").strip()
        if answer != "owned":
            reason = answer.removeprefix("error: ") or done.stderr.decode("utf-8", errors="replace").strip()
            raise ClipboardError(f"The X11 clipboard could not be taken ({reason or 'no answer'}).")

    def paste(self) -> str:
        """The clipboard's text (UTF8_STRING), "" when nobody owns it; ClipboardError for what this cannot read
        (an INCR transfer: the clipboard falls through to pyperclip)."""
        from Xlib import X, Xatom
        from Xlib.display import Display

        display = Display()
        try:
            clipboard, utf8 = display.intern_atom("CLIPBOARD"), display.intern_atom("UTF8_STRING")
            prop = display.intern_atom("DOTOCR_PASTE")
            window = display.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
            window.convert_selection(clipboard, utf8, prop, X.CurrentTime)
            display.flush()
            deadline = time.monotonic() + PASTE_TIMEOUT_S
            while time.monotonic() < deadline:
                if not display.pending_events():
                    select.select([display.fileno()], [], [], 0.05)
                    continue
                event = display.next_event()
                if event.type != X.SelectionNotify:
                    continue
                if event.property == X.NONE:
                    return ""
                reply = window.get_full_property(prop, X.AnyPropertyType)
                if reply is None:
                    return ""
                if reply.property_type == display.intern_atom("INCR"):
                    raise ClipboardError("The clipboard's text is too large to read here in one piece.")
                value = reply.value
                data = value if isinstance(value, bytes) else bytes(value)
                encoding = "latin-1" if reply.property_type == Xatom.STRING else "utf-8"
                return data.decode(encoding, errors="replace")
            raise ClipboardError("The program that owns the clipboard did not answer.")
        finally:
            display.close()
