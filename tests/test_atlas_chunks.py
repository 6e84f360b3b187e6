"""Chunks and partial sums without Ray: exact, order-independent merges; streamed corpora read like
uploads; the embedded job's checkpoints and resume; the CLI past 10,000 sentences; bad input."""

import gzip
import json
import random

import numpy as np
import pytest
import torch

from viz.analysis.head_stats import STATS, HeadStatsAccumulator
from viz.atlas.chunks import run_atlas
from viz.atlas.chunks import OrderedMerge, Partial, process_chunk, to_result
from viz.atlas.job import EmbeddedExecutor, JobError, JobSpec, Progress, parts_dir, run_job, write_csv
from viz.tasks.corpus import CorpusError, load_corpus
from viz.atlas.stream import iter_chunks, iter_sentences

SENTENCES = ["The cat sat on the mat, purring.", "Hi!", "Unbelievably, the tokenizer splits antidisestablishmentarianism.",
             "Yes; no: maybe?", "We walked along the river and the water was cold.", "Is this the way?",
             "Birds sing in the early morning before sunrise.", "Nobody knew why the lights went out at midnight."] * 3


@pytest.fixture(scope="module")
def bert(load):
    return load("tiny-bert")


def partials(bundle, size=5, words=True):
    return [process_chunk(bundle, SENTENCES[s:s + size], s, k, words=words, batch_size=3)
            for k, s in enumerate(range(0, len(SENTENCES), size))]


def merged(parts):
    m = OrderedMerge()
    for p in parts:
        m.add(p)
    assert m.complete()
    return to_result(m.total, 0.0)


def same(a, b):
    for s in STATS:
        assert np.array_equal(a.stats[s], b.stats[s]), s  # bit for bit: the float64 additions ran in one order
        assert np.array_equal(a.word_stats[s], b.word_stats[s]), s
    assert np.array_equal(a.top_ids, b.top_ids) and np.array_equal(a.top_scores, b.top_scores)
    assert (a.n_sentences, a.n_tokens, a.n_truncated) == (b.n_sentences, b.n_tokens, b.n_truncated)


def test_merge_in_any_arrival_order_is_exact(bert):
    parts = partials(bert)
    ref = merged(parts)
    for seed in range(3):
        shuffled = partials(bert)
        random.Random(seed).shuffle(shuffled)
        same(merged(shuffled), ref)
    same(merged(partials(bert)[::-1]), ref)
    # the embedded run_atlas over the same chunks is the same loop
    same(run_atlas(bert, SENTENCES, chunk=5, words=True, batch_size=3), ref)
    assert ref.n_sentences == len(SENTENCES)


def test_a_chunk_arriving_twice_counts_once(bert):
    parts = partials(bert)
    m = OrderedMerge()
    assert [m.add(p) for p in parts[:2]] == [True, True]
    assert m.add(partials(bert)[1]) is False  # a retried task's second answer
    assert m.add(parts[3]) and not m.add(parts[3])  # also while it is still waiting for chunk 2
    for p in parts[2:]:
        m.add(p)
    same(to_result(m.total, 0.0), merged(parts))
    assert m.total.n_chunks == len(parts)


def test_top_k_ties_do_not_depend_on_order():
    """Equal scores: the lower sentence id wins, whichever accumulator saw it first."""
    def acc(ids, score):
        a = HeadStatsAccumulator(1, 1, top_k=2)
        s = torch.full((len(STATS), 1, 1, len(ids)), score)
        a._update_top(s, torch.tensor(ids))
        return a

    x, y = acc([7, 3], 0.5), acc([5, 1], 0.5)
    x2, y2 = acc([7, 3], 0.5), acc([5, 1], 0.5)
    x.merge(y)
    y2.merge(x2)
    assert x.top_ids[0, 0, 0].tolist() == y2.top_ids[0, 0, 0].tolist() == [1, 3]


def test_partial_checkpoint_round_trip(bert, tmp_path):
    p = partials(bert)[1]
    p.save(tmp_path / "c.npz")
    q = Partial.load(tmp_path / "c.npz")
    a, b = p.to_arrays(), q.to_arrays()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert list(tmp_path.iterdir()) == [tmp_path / "c.npz"]  # no temporary file left


RAW = "\ufeffFirst  sentence here.\r\n\r\n  Second\tone \n\nThird\x85fourth\n" + "x" * 1500 + "\n"


@pytest.mark.parametrize("gz", [False, True])
def test_streamed_sentences_equal_uploaded_ones(tmp_path, gz):
    csv_text = 'id,text\n1,"A quoted, multi\nline sentence."\n2,\n3,Plain one.\n'
    rows = [{"text": "Alpha beta."}, {"other": 1}, {"text": {"nested": True}}, {"text": "Gamma."}]
    jsonl_text = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    for name, text, col in (("c.txt", RAW, None), ("c.csv", csv_text, "text"), ("c.jsonl", jsonl_text, "text")):
        path = tmp_path / (name + (".gz" if gz else ""))
        data = text.encode()
        path.write_bytes(gzip.compress(data) if gz else data)
        streamed = [s for s, _ in iter_sentences(path, col)]
        assert streamed == list(load_corpus(data, name, col).sentences), name


def test_chunks_and_stream_errors(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(f"Sentence {i}." for i in range(10)) + "\n")
    chunks = list(iter_chunks(path, size=4))
    assert [(c.chunk_id, c.start, len(c.sentences)) for c in chunks] == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
    assert chunks[-1].end_byte == path.stat().st_size
    bad = {"missing.txt": None, "b.txt": b"\x00\x01binary", "e.txt": b"\n \n", "u.txt": b"ok\n\xff\xfe\n",
           "z.txt.gz": b"not gzip", "d.docx": b"x"}
    for name, data in bad.items():
        p = tmp_path / name
        if data is not None:
            p.write_bytes(data)
        with pytest.raises(CorpusError) as e:
            list(iter_chunks(p))
        assert str(p) in str(e.value), str(e.value)  # every message names the file
    (tmp_path / "c.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CorpusError, match="its columns are: a, b"):
        list(iter_sentences(tmp_path / "c.csv", "text"))


def test_embedded_job_checkpoints_resume_and_refuse_other_settings(bert, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    spec = JobSpec(model="tiny-bert", corpus=str(corpus), out=str(tmp_path / "s.csv"), chunk_sentences=5, words=True,
                   batch_size=3)
    full = run_job(spec, EmbeddedExecutor(spec, bert))
    assert len(list(parts_dir(spec.out).glob("chunk-*.npz"))) == 5
    write_csv(full, spec)
    assert not parts_dir(spec.out).exists()

    def stop(p):
        if p.chunk_id == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(spec, EmbeddedExecutor(spec, bert), on_chunk=stop)
    with pytest.raises(JobError, match="add --resume"):
        run_job(spec, EmbeddedExecutor(spec, bert))
    other = JobSpec(**{**spec.__dict__, "max_tokens": 16})
    with pytest.raises(JobError, match="max_tokens"):
        run_job(other, EmbeddedExecutor(other, bert), resume=True)
    (parts_dir(spec.out) / "chunk-00000000.npz").write_bytes(b"PK\x03\x04 cut short")  # a damaged checkpoint
    progress = Progress(None)
    res = run_job(spec, EmbeddedExecutor(spec, bert), resume=True, progress=progress)
    assert progress.resumed == 1 and progress.chunks == 5  # chunk 0 computed again, chunk 1 reused
    same(res, full)


def test_cli_runs_past_ten_thousand_sentences(tmp_path):
    """No cap and no silent truncation on the command line: a .txt.gz of 10,050 sentences."""
    from viz.cli.main import main

    path = tmp_path / "big.txt.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(f"Sentence number {i} is short.\n" for i in range(10_050))
    out = tmp_path / "big.csv"
    assert main(["atlas", "--model", "tiny-bert", "--corpus", str(path), "--out", str(out), "--quiet",
                 "--chunk-sentences", "5000", "--batch-size", "64"]) == 0
    import pandas as pd

    df = pd.read_csv(out)
    assert len(df) == 8 and df[list(STATS)].notna().all().all()


def test_cli_bad_input_one_line_errors(tmp_path, capsys, monkeypatch):
    from viz.cli.main import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("One sentence.\n")
    out = str(tmp_path / "o.csv")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cases = [
        (["--corpus", str(tmp_path / "nope.txt"), "--engine", "ray"], f"'{tmp_path / 'nope.txt'}'"),
        (["--corpus", str(corpus), "--engine", "ray", "--address", f"127.0.0.1:{port}"], "cannot reach a Ray cluster"),
        (["--corpus", str(corpus), "--engine", "ray", "--address", "nonsense"], "is not host:port"),
        (["--corpus", str(corpus), "--chunk-sentences", "0"], "--chunk-sentences"),
        (["--corpus", str(corpus), "--model", "no-such-model-xyz"], "no-such-model-xyz"),
    ]
    for args, needle in cases:
        assert main(["atlas", "--out", out, "--quiet", *args]) == 2, args
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # Ray not installed
    assert main(["atlas", "--out", out, "--corpus", str(corpus), "--engine", "ray"]) == 2
    assert "pip install -r requirements-ray.txt" in capsys.readouterr().err
