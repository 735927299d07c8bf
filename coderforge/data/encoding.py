"""Binary detection and text decoding of raw file bytes.

``looks_binary``: git's rule (a NUL byte in the first 8 KB) unless the bytes start with a UTF-16/32
byte-order mark, plus a share of non-text control bytes above 10 % of the first 8 KB, plus the
magic numbers of common binary formats.

``decode_text``: BOM-marked UTF-8/16/32, then strict UTF-8, then (``detect=True``) charset
detection with ``charset-normalizer``, accepted only when the result is confident (low chaos) and
free of control characters; anything else raises :class:`EncodingError` (the ingest step
quarantines the file with that message).
"""

from __future__ import annotations

import codecs

_SNIFF = 8192
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_MAGIC = (
    b"\x7fELF", b"\x89PNG", b"GIF87a", b"GIF89a", b"\xff\xd8\xff", b"%PDF-", b"PK\x03\x04", b"PK\x05\x06",
    b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c", b"\xca\xfe\xba\xbe", b"\x00asm",
    b"SQLite format 3\x00", b"\x28\xb5\x2f\xfd", b"Rar!", b"OggS", b"RIFF", b"ID3", b"wOFF", b"wOF2",
)
# bytes that do not occur in text files: C0 controls except \t \n \v \f \r and ESC, plus DEL
_CONTROL = bytes(b for b in range(32) if b not in (8, 9, 10, 11, 12, 13, 27)) + b"\x7f"
_TEXT_CTRL_OK = {"\t", "\n", "\r", "\f", "\v", "\x1b", "\b"}


class EncodingError(ValueError):
    pass


def _bom(data: bytes) -> str | None:
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    return None


def looks_binary(data: bytes) -> bool:
    if not data:
        return False
    if _bom(data):
        return False
    head = data[:_SNIFF]
    if b"\x00" in head:
        return True
    if head.startswith(_MAGIC):  # (PE executables start with "MZ" and carry NULs: caught above)
        return True
    controls = len(head) - len(head.translate(None, _CONTROL))
    return controls > 0.1 * len(head)


def decode_text(data: bytes, detect: bool = True) -> tuple[str, str]:
    """``(text, encoding)`` of ``data``; raises EncodingError when no confident decoding exists."""
    bom = _bom(data)
    if bom:
        try:
            return data.decode(bom), bom
        except UnicodeDecodeError as exc:
            raise EncodingError(f"byte-order mark says {bom} but decoding failed: {exc}") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = f"not UTF-8: {exc}"
    if not detect:
        raise EncodingError(utf8_error)
    from charset_normalizer import from_bytes

    best = from_bytes(data, cp_isolation=None).best()
    if best is None or best.encoding in (None, "utf_8"):
        raise EncodingError(f"{utf8_error}; no encoding detected")
    if best.chaos > 0.1:
        raise EncodingError(f"{utf8_error}; detected {best.encoding} but chaos {best.chaos:.2f} > 0.10")
    text = str(best)
    bad = sum(1 for c in text if (ord(c) < 32 or 0x7f <= ord(c) < 0xa0) and c not in _TEXT_CTRL_OK)
    if bad:
        raise EncodingError(f"{utf8_error}; {best.encoding} decoding leaves {bad} control characters")
    return text, best.encoding
