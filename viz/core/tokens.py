"""Tokens as a reader reads them, for axes, tables and pickers (the raw tokens stay in hovers and exports).

Byte-level BPE (GPT-2, Llama 3, Qwen, OLMo...) writes every byte as a printable character: a space is `Ġ`, a
newline `Ċ`, and a character of several UTF-8 bytes (an emoji, a CJK character, an accented letter) becomes two
to four such characters, often split over two tokens (`ðŁĻĤ` for 🙂, `ãĥ` + `Ī` for ト). SentencePiece models
with byte fallback (Llama 2, Mistral) write such a character as `<0xE3>` `<0x83>` `<0x88>`. `readable` turns them
back into text: a space into a visible `▁` (SentencePiece's own marker), a newline into `↵`, a tab into `⇥`, and
a character split over several tokens into that character on each of its tokens with which part it is
(`ト 1/2`, `ト 2/2`). WordPiece (`##ing`) and SentencePiece (`▁the`) tokens are readable as they are.

A token list is taken as byte-level when every token that is not a special token (`[CLS]`, `<s>`,
`<|endoftext|>`) is written in the byte alphabet, at least one uses a character that alphabet moves (`Ġ`,
`Ċ`, ...), and their bytes together are valid UTF-8: a WordPiece token such as `łodz` uses a moved character
but its bytes are not UTF-8, so it stays as it is.
"""

from __future__ import annotations

import functools
import re

SPACE, NEWLINE, TAB = "▁", "↵", "⇥"
_HEX = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPECIAL = re.compile(r"^(\[[A-Za-z_]+\]|<\|?[^<>\s]+\|?>)$")
MAX_PIECES = 8  # a character never spans more than 4 bytes; a run longer than this is not one character


@functools.lru_cache(maxsize=1)
def _alphabet() -> tuple[dict[str, int], frozenset[str]]:
    """GPT-2's byte -> printable character table, reversed; and the characters it moved (bytes that are not
    printable as themselves)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, moved, n = {}, set(), 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            moved.add(chr(256 + n))
            n += 1
    return chars, frozenset(moved)


def _byte_level(tokens: list[str]) -> bool:
    chars, moved = _alphabet()
    body = [t for t in tokens if t and not _SPECIAL.match(t)]
    if not body or not any(c in moved for t in body for c in t):
        return False
    if not all(c in chars for t in body for c in t):
        return False
    try:
        bytes(chars[c] for t in body for c in t).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _show(text: str) -> str:
    return text.replace(" ", SPACE).replace("\n", NEWLINE).replace("\t", TAB)


def _complete(buf: bytes) -> bool:
    try:
        buf.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def readable(tokens: list[str]) -> list[str]:
    """`tokens` as text a reader reads (see the module docstring); the same list when there is nothing to do."""
    tokens = [str(t) for t in tokens]
    chars, _ = _alphabet()
    if _byte_level(tokens):
        def raw(t: str) -> bytes | None:
            return None if _SPECIAL.match(t) else bytes(chars[c] for c in t)
    elif any(_HEX.match(t) for t in tokens):
        def raw(t: str) -> bytes | None:
            m = _HEX.match(t)
            return bytes([int(m.group(1), 16)]) if m else None
    else:
        return tokens
    out = list(tokens)
    i = 0
    while i < len(tokens):
        buf = raw(tokens[i])
        if buf is None:  # a special token, or a SentencePiece piece between byte runs: readable as it is
            i += 1
            continue
        j = i
        while not _complete(buf) and j + 1 < len(tokens) and j - i + 1 < MAX_PIECES:
            nxt = raw(tokens[j + 1])
            if nxt is None:
                break
            j += 1
            buf += nxt
        text = _show(buf.decode("utf-8", errors="replace"))
        if j == i:
            out[i] = text
        else:
            for k in range(i, j + 1):
                out[k] = f"{text.strip(SPACE) or text} {k - i + 1}/{j - i + 1}"
        i = j + 1
    return out


def readable_token(token: str) -> str:
    """One token on its own as a reader reads it (a picked answer, a predicted token): `readable([token])[0]`."""
    return readable([str(token)])[0]
