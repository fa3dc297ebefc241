"""PDFs built byte by byte to cost a renderer time or memory (issue 18), each a few KB: the red team's cases."""

from __future__ import annotations

import zlib


def build(objects: list[bytes], *, trailer: bytes = b"", version: bytes = b"1.7") -> bytes:
    """A PDF holding `objects` (1-based, the first the catalog), with a correct cross-reference table; `trailer`
    adds entries to its trailer dictionary (an /Encrypt and its /ID)."""
    out = bytearray(b"%PDF-" + version + b"\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref)
    return bytes(out)


def stream(dictionary: bytes, data: bytes) -> bytes:
    return dictionary[:-2] + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def document(pages: list[tuple[bytes, bytes, bytes]], extra: list[bytes]) -> bytes:
    """Pages given as (MediaBox, resources, content); `extra` objects are numbered after the pages' own."""
    count = len(pages)
    kids = b" ".join(b"%d 0 R" % (3 + 2 * n) for n in range(count))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % count]
    for n, (box, resources, content) in enumerate(pages):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox " + box + b" /Resources " + resources
                       + b" /Contents %d 0 R >>" % (4 + 2 * n))
        objects.append(stream(b"<< >>", content))
    return build(objects + extra)


LETTER = b"[0 0 612 792]"
PLAIN_PAGE = (LETTER, b"<< >>", b"0 0 0 rg 72 700 200 20 re f")


def slow_forms(depth: int = 6, fan: int = 10, *, then_plain: bool = False, plain_before: int = 0) -> bytes:
    """Form XObjects nested `depth` deep, each drawing the next `fan` times, the innermost a full-page image: a
    million full-page image draws from 2 KB (minutes of rendering in a few MB). With `then_plain`, a normal
    page follows; `plain_before` normal pages come first."""
    first = 3 + 2 * (1 + plain_before + (1 if then_plain else 0))
    forms = []
    for level in range(depth):
        number = first + level
        if level == depth - 1:
            content, resources = b"q 612 0 0 792 0 0 cm /I Do Q", b"<< /XObject << /I %d 0 R >> >>" % (first + depth)
        else:
            content = b" ".join([b"/F Do"] * fan)
            resources = b"<< /XObject << /F %d 0 R >> >>" % (number + 1)
        forms.append(stream(b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources " + resources
                            + b" >>", content))
    image = stream(b"<< /Type /XObject /Subtype /Image /Width 8 /Height 8 /ColorSpace /DeviceGray "
                   b"/BitsPerComponent 8 >>", bytes(range(0, 256, 4)))
    pages = [PLAIN_PAGE] * plain_before + [(LETTER, b"<< /XObject << /F %d 0 R >> >>" % first, b"/F Do")]
    return document([*pages, PLAIN_PAGE] if then_plain else pages, [*forms, image])


def content_bomb(operations: int = 3_000_000) -> bytes:
    """A page whose compressed content stream (about 80 KB) inflates to millions of filled rectangles: PDFium holds
    every one as an object, about a gigabyte."""
    content = zlib.compress(b"0 0 1 1 re f\n" * operations, 9)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << >> /Contents 4 0 R >>",
               stream(b"<< /Filter /FlateDecode >>", content)]
    return build(objects)


def strip_page() -> bytes:
    """A 14,400,000 x 1 point MediaBox in a few hundred bytes: a 5.6-megapixel strip, 1 pixel high, once rendered
    (then padded to 200:1 before resizing, once a 478 GB canvas)."""
    return document([(b"[0 0 14400000 1]", b"<< >>", b"0 0 0 RG 0 0.5 m 14400000 0.5 l S")], [])
