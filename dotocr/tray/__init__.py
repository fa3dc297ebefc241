"""The tray app and the small platform pieces it stands on.

Kept import-free on purpose: `dotocr doctor` and the CLI import single submodules
(`dotocr.tray.clipboard`, `dotocr.tray.hotkey`) without pulling in pystray, Tk or the engine.
"""
