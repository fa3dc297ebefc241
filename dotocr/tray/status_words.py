"""The words for an `EngineState`: the menu's status line and the icon's tooltip.

Both read the one state the engine host publishes (dotocr.engine.EngineState); neither keeps flags of its
own. What runs is shown as the engine resolved it ("bf16 on cuda"), the same words the CLI and logs use.
"""

from __future__ import annotations

from dotocr.engine import EngineState, Status

TOOLTIP_MAX = 127
"""Windows keeps 128 UTF-16 units of tooltip including the terminator; longer text is cut by us."""


def _percent(state: EngineState) -> str:
    return f" {int(state.progress * 100)}%" if state.progress is not None else ""


def status_line(state: EngineState) -> str:
    """The menu's first, disabled line."""
    if state.status is Status.READY:
        return f"Ready ({state.plan_text})" if state.plan_text else "Ready"
    if state.status is Status.DOWNLOADING:
        return f"Downloading the model{_percent(state)}"
    if state.status is Status.LOADING:
        return "Loading the model"
    if state.status is Status.BUSY:
        return "Reading the capture"
    if state.status is Status.UNLOADED:
        return "Model not in memory (loads on the next capture)"
    return f"Error: {state.detail or 'unknown'}"


def tooltip(state: EngineState, hotkey: str, *, problem: str | None = None) -> str:
    """One line for the tray tooltip, cut to what Windows shows."""
    if state.status is Status.READY:
        plan = f" ({state.plan_text})" if state.plan_text else ""
        text = f"dotocr: ready{plan}, press {hotkey} to capture"
    elif state.status is Status.DOWNLOADING:
        text = f"dotocr: downloading the model{_percent(state)}"
    elif state.status is Status.LOADING:
        text = "dotocr: loading the model"
    elif state.status is Status.BUSY:
        text = "dotocr: reading the capture"
    elif state.status is Status.UNLOADED:
        text = f"dotocr: model not in memory, press {hotkey} to capture"
    else:
        text = f"dotocr: {state.detail or 'something went wrong'}"
    if problem:
        text = f"{text} ({problem})"
    return text if len(text) <= TOOLTIP_MAX else text[: TOOLTIP_MAX - 1] + "…"
