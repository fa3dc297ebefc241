"""The tray app: the icon and menu, the capture flow, the warm engine, history and the single instance.

The platform services it stands on (clipboard, hotkey, notification, autostart) live in `dotocr.desktop`,
which `dotocr doctor` uses too.
"""
