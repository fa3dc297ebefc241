"""Where the model was unsure: the answer's characters written by tokens it gave a low probability.

No screen-OCR tool shows this, and it tells a person where to look: a letter the model hesitated over between two
look-alikes, a digit it half guessed. Each engine reports its answer as pieces (the text each token added and the
probability the model gave that token: our decoders' softmax, a remote server's logprobs); this module turns the
unsure ones into character spans of the final text.

For the text and grounding prompts the final text is the answer itself, so the spans are exact. For the layout
prompts the text is rebuilt from cells (Markdown, or the cells as JSON), so an unsure piece is found again by its
characters, in order; a piece that does not survive into the text (a JSON key, a box) marks nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

LOW_CONFIDENCE = 0.5
"""A token the model gave less than even odds: it thought another token at least as likely."""

Piece = tuple[str, float]
"""(the text a token added to the answer, the probability the model gave that token)."""


def low_confidence_spans(pieces: Sequence[Piece], answer: str, text: str, prompt: str,
                         threshold: float = LOW_CONFIDENCE) -> list[list[int]]:
    """[start, end) character spans of `text` (the result's text) written by unsure tokens, merged where they
    touch. `answer` is what the pieces add up to (the kept answer, before formatting)."""
    unsure = _unsure_spans(pieces, threshold)
    if not unsure or "".join(piece for piece, _ in pieces) != answer:
        return []
    if prompt in ("text", "grounding"):
        lead = len(answer) - len(answer.lstrip())  # the text is the answer, stripped
        spans = [[max(0, start - lead), min(len(text), end - lead)] for start, end in unsure]
        return [span for span in spans if span[0] < span[1]]
    return _found_again(unsure, answer, text)


def _unsure_spans(pieces: Sequence[Piece], threshold: float) -> list[tuple[int, int]]:
    """Spans of `answer` from unsure pieces; a piece holding no whole character yet (its bytes finish in the next
    piece) lends its doubt to the piece that completes it."""
    spans: list[tuple[int, int]] = []
    position, doubt = 0, False
    for piece, probability in pieces:
        doubt = doubt or probability < threshold
        end = position + len(piece)
        if doubt and piece.strip():
            if spans and spans[-1][1] >= position:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((position + len(piece) - len(piece.lstrip()), end - len(piece) + len(piece.rstrip())))
        if piece:
            doubt = False
        position = end
    return spans


def _found_again(unsure: list[tuple[int, int]], answer: str, text: str) -> list[list[int]]:
    spans: list[list[int]] = []
    cursor = 0
    for start, end in unsure:
        needle = answer[start:end]
        found = text.find(needle, cursor)
        if found < 0:
            continue
        spans.append([found, found + len(needle)])
        cursor = found + len(needle)
    return spans


__all__ = ["LOW_CONFIDENCE", "Piece", "low_confidence_spans"]
