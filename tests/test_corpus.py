"""Corpus readers: good files, and every bad input gives a CorpusError with a clear message."""

import json

import pytest

from viz.tasks.corpus import (MAX_CHARS, Corpus, CorpusError, columns, corpus_key, load_corpus, read_file,
                              sample_corpus)


def test_txt_one_sentence_per_line_blank_lines_skipped():
    c = load_corpus(b"The cat sat.\n\n  Dogs   bark!  \r\n", "c.txt")
    assert c.sentences == ("The cat sat.", "Dogs bark!")
    assert c.key == corpus_key(["The cat sat.", "Dogs bark!"]) != load_corpus(b"x\n", "c.txt").key


def test_csv_and_jsonl_columns():
    csv = b"id,text\n1,Hello there.\n2,\"A, quoted sentence.\"\n"
    assert columns(csv, "c.csv") == ["id", "text"]
    assert load_corpus(csv, "c.csv", "text").sentences == ("Hello there.", "A, quoted sentence.")
    jl = b'{"text": "One.", "n": 1}\n\n{"text": "Two.", "extra": true}\n'
    assert columns(jl, "c.jsonl") == ["text", "n", "extra"]
    assert load_corpus(jl, "c.jsonl", "text").sentences == ("One.", "Two.")


def test_empty_file():
    for data in (b"", b"\n \n\t\n"):
        with pytest.raises(CorpusError, match="no sentences"):
            load_corpus(data, "empty.txt")
    with pytest.raises(CorpusError, match="no columns"):
        load_corpus(b"", "empty.csv", "text")


def test_binary_file():
    with pytest.raises(CorpusError, match="binary"):
        load_corpus(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "picture.txt")
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_corpus("café".encode("latin-1"), "latin.txt")


def test_missing_column_names_the_real_ones():
    with pytest.raises(CorpusError, match=r"Column 'sentence' is not in 'c.csv'; its columns are: id, text"):
        load_corpus(b"id,text\n1,Hi.\n", "c.csv", "sentence")
    with pytest.raises(CorpusError, match="No column chosen"):
        load_corpus(b'{"text": "Hi."}\n', "c.jsonl")
    with pytest.raises(CorpusError, match="its columns are: text"):
        load_corpus(b'{"text": "Hi."}\n', "c.jsonl", "body")


def test_bad_jsonl_line():
    with pytest.raises(CorpusError, match="line 2 is not valid JSON"):
        load_corpus(b'{"text": "ok"}\nnot json\n', "c.jsonl", "text")
    with pytest.raises(CorpusError, match="line 1 is a JSON list"):
        load_corpus(json.dumps([1, 2]).encode(), "c.jsonl", "text")


def test_over_the_limit():
    data = "\n".join(f"Sentence {i}." for i in range(11)).encode()
    with pytest.raises(CorpusError, match="has 11 sentences; the limit is 10"):
        load_corpus(data, "big.txt", max_sentences=10)
    assert len(load_corpus(data, "ok.txt", max_sentences=11)) == 11


def test_long_sentences_are_clipped_and_counted():
    c = load_corpus(("x" * (MAX_CHARS + 5) + "\nshort\n").encode(), "c.txt")
    assert c.clipped == 1 and len(c.sentences[0]) == MAX_CHARS


def test_unsupported_extension_and_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="unsupported file type '.pdf'"):
        load_corpus(b"%PDF", "paper.pdf")
    with pytest.raises(CorpusError, match="No such corpus file"):
        read_file(tmp_path / "missing.txt")


def test_sample_corpus_override_and_absence(tmp_path, monkeypatch):
    p = tmp_path / "s.txt"
    p.write_text("One.\nTwo.\nThree.\n")
    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(p))
    assert sample_corpus(limit=2).sentences == ("One.", "Two.")
    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(tmp_path / "nope.txt"))
    with pytest.raises(CorpusError, match="upload a .txt file"):
        sample_corpus()
    assert isinstance(load_corpus(b"a\n", "a.txt"), Corpus)
