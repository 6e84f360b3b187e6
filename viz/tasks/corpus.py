"""Corpora for the head atlas: the bundled sample, or an uploaded .txt / .csv / .jsonl file.

Every reader returns a `Corpus` (a tuple of sentences plus where they came from) or raises
`CorpusError` with a message meant for the user: empty file, binary file, unknown column,
too many sentences. Limits (shown on the page and in `python -m viz atlas --help`):

- at most `MAX_SENTENCES` sentences and `MAX_BYTES` of file;
- a sentence longer than `MAX_CHARS` characters is cut there (and counted in `clipped`);
  the atlas job further truncates each sentence to its token limit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from viz.core.paths import DATA

SAMPLE_PATH = DATA / "sample_sentences.txt"  # VIZ_SAMPLE_CORPUS overrides it (tests, demos)
MAX_SENTENCES = 10_000
MAX_BYTES = 20 * 1024 * 1024
MAX_CHARS = 1_000
EXTENSIONS = (".txt", ".csv", ".jsonl")


class CorpusError(ValueError):
    """A corpus could not be read; the message says why and what to do instead."""


class CorpusTooLarge(CorpusError):
    """Over the upload limits (MAX_BYTES, MAX_SENTENCES): `python -m viz atlas` reads any size."""


@dataclass(frozen=True)
class Corpus:
    sentences: tuple[str, ...]
    source: str
    clipped: int = 0  # sentences cut at MAX_CHARS

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def key(self) -> str:
        """Content hash: the cache key of everything computed from this corpus."""
        return corpus_key(self.sentences)


def corpus_key(sentences) -> str:
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _text(data: bytes, filename: str) -> str:
    if len(data) > MAX_BYTES:
        raise CorpusTooLarge(f"'{filename}' is {len(data) / 2**20:.1f} MB; the limit is {MAX_BYTES // 2**20} MB. "
                          "Upload a smaller sample of the corpus.")
    if b"\x00" in data[:8192]:
        raise CorpusError(f"'{filename}' looks like a binary file, not text. Upload UTF-8 text: "
                          ".txt (one sentence per line), .csv or .jsonl.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"'{filename}' is not UTF-8 text (bad byte at position {e.start}). "
                          "Save it as UTF-8 and upload it again.") from None


def _kind(filename: str) -> str:
    ext = Path(filename).suffix.lower()
    if ext not in EXTENSIONS:
        raise CorpusError(f"'{filename}': unsupported file type '{ext or '(none)'}'. "
                          f"Use one of {', '.join(EXTENSIONS)}.")
    return ext


def _jsonl_rows(text: str, filename: str) -> list[dict]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"'{filename}' line {n} is not valid JSON ({e.msg}). "
                              "A .jsonl file has one JSON object per line.") from None
        if not isinstance(row, dict):
            raise CorpusError(f"'{filename}' line {n} is a JSON {type(row).__name__}, not an object with fields.")
        rows.append(row)
    return rows


def _csv_rows(text: str, filename: str) -> tuple[list[str], list[dict]]:
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = list(reader)
        return [c for c in (reader.fieldnames or []) if c is not None], rows
    except csv.Error as e:
        raise CorpusError(f"'{filename}' is not a readable CSV file ({e}).") from None


def columns(data: bytes, filename: str) -> list[str]:
    """Column names of a .csv (header row) or .jsonl (keys of all objects, first-seen order); [] for .txt."""
    kind, text = _kind(filename), _text(data, filename)
    if kind == ".csv":
        return _csv_rows(text, filename)[0]
    if kind == ".jsonl":
        seen: dict[str, None] = {}
        for row in _jsonl_rows(text, filename):
            seen.update(dict.fromkeys(row))
        return list(seen)
    return []


def load_corpus(data: bytes, filename: str, column: str | None = None,
                max_sentences: int = MAX_SENTENCES) -> Corpus:
    """Bytes of an uploaded file -> Corpus. `column` is required for .csv and .jsonl."""
    kind, text = _kind(filename), _text(data, filename)
    if kind == ".txt":
        values = text.splitlines()
    else:
        cols, rows = _csv_rows(text, filename) if kind == ".csv" else (columns(data, filename),
                                                                         _jsonl_rows(text, filename))
        if not cols:
            raise CorpusError(f"'{filename}' has no columns: it is empty or has no header row.")
        if column is None or column not in cols:
            what = "No column chosen" if column is None else f"Column '{column}' is not in '{filename}'"
            raise CorpusError(f"{what}; its columns are: {', '.join(cols)}.")
        values = [r.get(column) for r in rows]
        values = ["" if v is None else v if isinstance(v, str) else json.dumps(v) if kind == ".jsonl" else str(v)
                  for v in values]
    sentences = [" ".join(v.split()) for v in values]
    sentences = [s for s in sentences if s]
    if not sentences:
        where = f"column '{column}' of " if column else ""
        raise CorpusError(f"{where}'{filename}' has no sentences: it is empty or blank. "
                          "Put one sentence per line (or per row).")
    if len(sentences) > max_sentences:
        raise CorpusTooLarge(f"'{filename}' has {len(sentences):,} sentences; the limit is {max_sentences:,}. "
                          f"Upload a sample of at most {max_sentences:,} sentences.")
    clipped = sum(len(s) > MAX_CHARS for s in sentences)
    return Corpus(tuple(s[:MAX_CHARS] for s in sentences), source=filename, clipped=clipped)


def read_file(path: str | Path, column: str | None = None, max_sentences: int = MAX_SENTENCES) -> Corpus:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"No such corpus file: '{path}'.")
    return load_corpus(path.read_bytes(), path.name, column, max_sentences)


def sample_corpus(limit: int | None = None) -> Corpus:
    """The bundled sample sentences, first `limit`: 300 short sentences from permissive Debian sources
    (data/sample_sentences.txt; sources and licences in data/corpus/DATACARD.md)."""
    path = Path(os.environ.get("VIZ_SAMPLE_CORPUS") or SAMPLE_PATH)
    if not path.is_file():
        raise CorpusError(f"The bundled sample corpus ({path.name}) is not in this build; "
                          "upload a .txt file with one sentence per line instead.")
    corpus = read_file(path)
    if limit is not None and limit < len(corpus):
        corpus = Corpus(corpus.sentences[:limit], source=f"{corpus.source} (first {limit})", clipped=corpus.clipped)
    return corpus
