"""Desktop services for each platform: clipboard, global hotkey, notifications, start at login.

Each is a package on NormCap's model: `base.py` holds the protocol and its one error, one small module per
platform or tool implements it, and the package's `get_*()` picks the first that works here, at call time.
Kept import-free: the tray and `dotocr doctor` import single packages without pystray, Tk or the engine.
"""
