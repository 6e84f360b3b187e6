"""Corpora of any size for the command line: a file read sentence by sentence and cut into fixed chunks.

`viz.tasks.corpus` reads an uploaded file whole (the page's 10,000-sentence, 20 MB limits); this module reads
a file of any size as a stream, so memory stays flat in the corpus size: `.txt` (one sentence per line),
`.csv` and `.jsonl` (with a column), each optionally gzip-compressed (`corpus.txt.gz`).
Sentences are extracted exactly as `viz.tasks.corpus.load_corpus` does (whitespace collapsed, blank ones
skipped, cut at `MAX_CHARS`), so a file within the page's limits gives the same sentences both ways.

Chunk k holds sentences [k*size, (k+1)*size) of that stream: the unit of work of the atlas job
(viz.atlas.job). Every error is a `CorpusError` whose message names the file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from viz.tasks.corpus import EXTENSIONS, MAX_CHARS, CorpusError

COLUMN_PROBE_ROWS = 100  # a .jsonl column that none of the first rows has is a typo, not a sparse field


@dataclass(frozen=True)
class Chunk:
    chunk_id: int
    start: int  # corpus index of the first sentence
    sentences: tuple[str, ...]
    end_byte: int  # position in the file (compressed bytes for .gz) after the chunk: for progress


def corpus_format(path: str | Path) -> tuple[str, bool]:
    """('.txt' | '.csv' | '.jsonl', gzip?) from the file name; CorpusError for anything else."""
    name = Path(path).name.lower()
    gz = name.endswith(".gz")
    ext = Path(name[:-3] if gz else name).suffix
    if ext not in EXTENSIONS:
        raise CorpusError(f"'{path}': unsupported file type '{ext or '(none)'}{'.gz' if gz else ''}'. "
                          f"Use one of {', '.join(EXTENSIONS)}, optionally gzip-compressed (.txt.gz, ...).")
    return ext, gz


class _Reader:
    """The file as text lines, with the raw byte position for progress."""

    def __init__(self, path: Path, gz: bool, newline: str | None) -> None:
        self.path = path
        try:
            self.raw = open(path, "rb")
        except OSError as e:
            raise CorpusError(f"Cannot read corpus file '{path}': {e.strerror or e}.") from None
        binary = gzip.GzipFile(fileobj=self.raw, mode="rb") if gz else self.raw
        try:
            head = binary.peek(8192)[:8192] if hasattr(binary, "peek") else b""
        except (OSError, EOFError, zlib.error) as e:
            self.raw.close()
            raise CorpusError(f"'{path}' is not a readable gzip file ({e}).") from None
        if b"\x00" in head:
            self.raw.close()
            raise CorpusError(f"'{path}' looks like a binary file, not text. Use UTF-8 text: "
                              ".txt (one sentence per line), .csv or .jsonl (optionally .gz).")
        self.text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline=newline)
        self.line_no = 0

    def position(self) -> int:
        return self.raw.tell()

    def lines(self) -> Iterator[str]:
        try:
            for line in self.text:
                self.line_no += 1
                yield line
        except UnicodeDecodeError as e:
            raise CorpusError(f"'{self.path}' is not UTF-8 text (bad byte near line {self.line_no + 1}, "
                              f"{e.reason}). Save it as UTF-8.") from None
        except (OSError, EOFError, zlib.error) as e:
            raise CorpusError(f"'{self.path}' could not be read to the end near line {self.line_no + 1} "
                              f"({e}).") from None

    def close(self) -> None:
        self.raw.close()


def _values(reader: _Reader, ext: str, column: str | None) -> Iterator[str]:
    """Raw values, one per sentence candidate, as `viz.tasks.corpus.load_corpus` sees them."""
    path = reader.path
    if ext == ".txt":
        for line in reader.lines():
            yield from line.splitlines() or [""]  # the same line breaks as str.splitlines() on the whole text
        return
    if column is None:
        raise CorpusError(f"'{path}' is a {ext} file: choose the column (or key) holding the sentences with --column.")
    if ext == ".csv":
        try:
            rows = csv.DictReader(reader.lines())
            cols = [c for c in (rows.fieldnames or []) if c is not None]
            if not cols:
                raise CorpusError(f"'{path}' has no columns: it is empty or has no header row.")
            if column not in cols:
                raise CorpusError(f"Column '{column}' is not in '{path}'; its columns are: {', '.join(cols)}.")
            for row in rows:
                v = row.get(column)
                yield "" if v is None else v
        except csv.Error as e:
            raise CorpusError(f"'{path}' is not a readable CSV file near line {reader.line_no} ({e}).") from None
        return
    seen: dict[str, None] = {}
    n = 0
    for line in reader.lines():
        for part in line.splitlines():
            if not part.strip():
                continue
            n += 1
            try:
                row = json.loads(part)
            except json.JSONDecodeError as e:
                raise CorpusError(f"'{path}' line {reader.line_no} is not valid JSON ({e.msg}). "
                                  "A .jsonl file has one JSON object per line.") from None
            if not isinstance(row, dict):
                raise CorpusError(f"'{path}' line {reader.line_no} is a JSON {type(row).__name__}, not an object.")
            if seen is not None:
                seen.update(dict.fromkeys(row))
                if column in seen:
                    seen = None
                elif n >= COLUMN_PROBE_ROWS:
                    raise CorpusError(f"Key '{column}' is in none of the first {n} rows of '{path}'; "
                                      f"their keys are: {', '.join(seen)}.")
            v = row.get(column)
            yield "" if v is None else v if isinstance(v, str) else json.dumps(v)
    if seen is not None and n:
        raise CorpusError(f"Key '{column}' is not in '{path}'; its keys are: {', '.join(seen)}.")


def iter_sentences(path: str | Path, column: str | None = None) -> Iterator[tuple[str, int]]:
    """(sentence, raw byte position so far) for every sentence of the file, streamed."""
    path = Path(path)
    ext, gz = corpus_format(path)
    if not path.is_file():
        raise CorpusError(f"No such corpus file: '{path}'.")
    reader = _Reader(path, gz, "" if ext == ".csv" else None)
    try:
        for v in _values(reader, ext, column):
            s = " ".join(v.split())
            if s:
                yield s[:MAX_CHARS], reader.position()
    finally:
        reader.close()


def iter_chunks(path: str | Path, column: str | None = None, size: int = 4096) -> Iterator[Chunk]:
    """Consecutive chunks of `size` sentences (the last may be shorter); CorpusError when there is none."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    buf: list[str] = []
    chunk_id = start = 0
    pos = 0
    for s, pos in iter_sentences(path, column):
        buf.append(s)
        if len(buf) == size:
            yield Chunk(chunk_id, start, tuple(buf), pos)
            chunk_id, start, buf = chunk_id + 1, start + size, []
    if buf:
        yield Chunk(chunk_id, start, tuple(buf), pos)
    elif chunk_id == 0:
        where = f"column '{column}' of " if column else ""
        raise CorpusError(f"{where}'{path}' has no sentences: it is empty or blank. "
                          "Put one sentence per line (or row).")


def file_size(path: str | Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def first_sentences(path: str | Path, column: str | None = None, limit: int | None = None) -> list[str]:
    """The first `limit` sentences of a corpus file (all when None), read as a stream; CorpusError when none."""
    out: list[str] = []
    for s, _ in iter_sentences(path, column):
        if limit is not None and len(out) >= limit:
            break
        out.append(s)
    if not out:
        raise CorpusError(f"'{path}' has no sentences: it is empty or blank. Put one sentence per line (or row).")
    return out
