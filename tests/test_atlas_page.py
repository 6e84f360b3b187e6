"""The head-atlas page in AppTest with the real MiniLM: its table, download and grid against statistics recomputed
from one capture per sentence; the CLI's CSV against the same."""

import io
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
N = 12  # sentences the page uses: small and quick


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """The first N bundled sample sentences (data/sample_sentences.txt is shipped: if it is missing, this fails)."""
    sample = ROOT / "data" / "sample_sentences.txt"
    lines = [s for s in sample.read_text().splitlines() if s.strip()]
    path = tmp_path_factory.mktemp("atlas") / "corpus.txt"
    path.write_text("\n".join(lines[:N]) + "\n")
    return path


@pytest.fixture(scope="module")
def page(corpus_file):
    old = os.environ.get("VIZ_SAMPLE_CORPUS")
    os.environ["VIZ_SAMPLE_CORPUS"] = str(corpus_file)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        at = AppTest.from_file(APP, default_timeout=180)
        at.run()
        at.switch_page("pages/atlas.py").run()
        yield at
    finally:
        if old is None:
            os.environ.pop("VIZ_SAMPLE_CORPUS", None)
        else:
            os.environ["VIZ_SAMPLE_CORPUS"] = old


def test_page_runs_the_job_and_draws(page):
    at = page
    assert not at.exception, [e.value for e in at.exception]
    assert any("Run atlas" in i.value for i in at.info)
    at.number_input(key="atlas_limit").set_value(N)
    at.button(key="atlas_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert f"{N} sentences" in at.success[0].value
    assert len(at.get("plotly_chart")) >= 4  # statistic grid, roles, head map, strongest sentences
    assert "has no masked-LM head" in " ".join(i.value for i in at.info)  # minilm: no MLM head
    # pick another statistic and another head: the page reruns from the cached result
    at.selectbox(key="atlas_stat").set_value("prev").run()
    at.number_input(key="atlas_layer").set_value(0).run()
    at.number_input(key="atlas_head").set_value(2).run()
    assert not at.exception
    assert "previous-token" in " ".join(c.value for c in at.caption)


PIECE = re.compile(r"^(##|Ġ|▁)")


def stats_from_captures(bundle, sentences):
    """Clark et al.'s per-head statistics by their definitions, one capture per sentence (no padding, no batches,
    no viz.atlas.core): every non-special token's row counts once (token-weighted mean over the corpus); special
    tokens' columns count. -> ({stat: [layer, head]}, roles [layer, head])."""
    from viz.analysis.head_stats import BROAD_FRACTION, ROLE_NAMES, ROLE_THRESHOLDS
    from viz.core.capture import capture

    tok = bundle.tokenizer
    cls_ids = {i for i in (tok.cls_token_id, tok.bos_token_id) if i is not None}
    sep_ids = {i for i in (tok.sep_token_id, tok.eos_token_id) if i is not None} - cls_ids
    sums, rows, log_keys = {}, 0, 0.0
    for text in sentences:
        cap = capture(bundle, text)
        A = cap.attentions["encoder"].astype(np.float64)  # [L, H, T, T]
        T = A.shape[-1]
        ids = cap.input_ids.tolist()
        is_cls = np.array([i in cls_ids for i in ids])
        is_sep = np.array([i in sep_ids for i in ids])
        punct = np.array([not sp and bool(PIECE.sub("", t)) and all(unicodedata.category(c).startswith("P")
                                                                   for c in PIECE.sub("", t))
                          for t, sp in zip(cap.tokens, cap.special)])
        for i in np.where(~cap.special)[0]:
            a = A[:, :, i]  # [L, H, key]
            with np.errstate(divide="ignore", invalid="ignore"):
                ent = -np.where(a > 0, a * np.log(a), 0.0).sum(-1)
            row = {"entropy": ent, "distance": (a * np.abs(np.arange(T) - i)).sum(-1), "cls": a[..., is_cls].sum(-1),
                   "sep": a[..., is_sep].sum(-1), "punct": a[..., punct].sum(-1), "self": a[..., i],
                   "prev": a[..., i - 1], "next": a[..., i + 1],  # [CLS] and [SEP] are real neighbours
                   "first": a[..., 0]}  # rows after the first token (the first, [CLS], is special here)
            for k, v in row.items():
                sums[k] = sums.get(k, 0.0) + v
            rows += 1
            log_keys += np.log(T)
    means = {k: v / rows for k, v in sums.items()}
    roles = np.empty(means["entropy"].shape, dtype=object)
    for lh in np.ndindex(roles.shape):
        ratios = {k: means[k][lh] / t for k, t in ROLE_THRESHOLDS.items()}
        best = max(ratios, key=lambda k: (ratios[k], -list(ROLE_THRESHOLDS).index(k)))
        roles[lh] = ROLE_NAMES[best] if ratios[best] >= 1 else \
            "broad" if means["entropy"][lh] >= BROAD_FRACTION * log_keys / rows else "mixed"
    return means, roles


def test_page_table_and_its_download_equal_statistics_from_captures(corpus_file, downloads, monkeypatch):
    """The page's own run (not another test's): its table and its CSV download against `stats_from_captures`,
    and the statistic grid it draws."""
    from conftest import chart_spec
    from viz.core.models import load_model

    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(corpus_file))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/atlas.py").run()
    at.number_input(key="atlas_limit").set_value(N)
    # settings no other test uses (the sentences are far shorter): a result stored by another test's run
    # would be shown with Run disabled, and this test must see its own run
    at.number_input(key="atlas_max_tokens").set_value(100).run()
    at.button(key="atlas_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"{N} sentences" in at.success[0].value
    sentences = [s for s in corpus_file.read_text().splitlines() if s.strip()][:N]
    want, roles = stats_from_captures(load_model("minilm"), sentences)
    table = at.dataframe[0].value.reset_index()
    csv = downloads.csv("atlas_csv")
    cols = ["layer", "head", "entropy", "distance", "cls", "sep", "punct", "self", "prev", "next", "first", "role"]
    assert list(table.columns) == list(csv.columns) == cols
    assert table[["layer", "head"]].values.tolist() == [[lv, h] for lv in range(6) for h in range(12)]
    for stat in cols[2:-1]:
        np.testing.assert_allclose(table[stat].to_numpy(float), want[stat].ravel(), atol=1e-5, err_msg=stat)
        np.testing.assert_allclose(csv[stat].to_numpy(float), table[stat].to_numpy(float), atol=0, err_msg=stat)
    assert table["role"].tolist() == csv["role"].tolist() == roles.ravel().tolist()
    assert at.selectbox(key="atlas_stat").value == "entropy"
    np.testing.assert_allclose(chart_spec(at, "atlas_stat_fig")["data"][0]["z"], want["entropy"], atol=1e-4)


def test_cli_csv_equals_statistics_from_captures(corpus_file, tmp_path):
    from viz.core.models import load_model

    out = tmp_path / "stats.csv"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "viz", "atlas", "--model", "minilm", "--corpus", str(corpus_file),
                        "--out", str(out), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cli = pd.read_csv(out)
    assert list(cli.columns) == ["layer", "head", "entropy", "distance", "cls", "sep", "punct", "self", "prev",
                                 "next", "first", "role"]
    want, roles = stats_from_captures(load_model("minilm"), [s for s in corpus_file.read_text().splitlines()
                                                            if s.strip()][:N])
    for stat in cli.columns[2:-1]:
        np.testing.assert_allclose(cli[stat].to_numpy(float), want[stat].ravel(), atol=1e-5, err_msg=stat)
    assert cli["role"].tolist() == roles.ravel().tolist()


def test_cli_help_documents_definitions():
    from viz.cli.main import build_parser

    buf = io.StringIO()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["atlas"]
    sub.print_help(buf)
    text = buf.getvalue()
    for needle in ("entropy", "distance", "cls", "sep", "punct", "self", "prev", "next",
                   "rows (attending tokens)", "Padding is excluded", "10,000"):
        assert needle in text, needle


def test_cli_bad_corpus_exit_code(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x00\x01binary")
    from viz.cli.main import main

    assert main(["atlas", "--model", "tiny-bert", "--corpus", str(bad), "--out", str(tmp_path / "o.csv")]) == 2
    assert not (tmp_path / "o.csv").exists()


@pytest.fixture(scope="module")
def mlm_folder(tmp_path_factory):
    """A tiny random BertForMaskedLM saved as a local model folder (safetensors + MiniLM tokenizer)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from viz.core.models import minilm_dir

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    BertForMaskedLM(cfg).save_pretrained(root / "tiny-mlm", safe_serialization=True)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(root / "tiny-mlm")
    return root / "tiny-mlm"


def test_page_head_importance_with_an_mlm_head(corpus_file, mlm_folder, monkeypatch):
    from viz.app.ui import OTHER

    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(corpus_file))
    monkeypatch.setenv("VIZ_MODEL_ROOTS", str(mlm_folder.parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/atlas.py")
    at.selectbox(key="model_choice").set_value(OTHER).run()
    at.text_input(key="model_other").set_value(str(mlm_folder)).run()
    at.button(key="atlas_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "2 layers × 4 heads" in at.success[0].value
    n = len(at.get("plotly_chart"))
    at.button(key="atlas_importance").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == n + 1, [i.value for i in at.info] + [w.value for w in at.warning]
    assert not at.get("progress")  # the importance bar went away with the run (it stayed, full, above the result)


def test_page_cancel_belongs_to_its_settings(corpus_file, monkeypatch):
    """A run whose cancel arrives between batches stops and keeps nothing; the notice belongs to that run's
    settings (it showed for every later setting, after a finished run, after a model switch)."""
    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(corpus_file))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/atlas.py").run()
    at.number_input(key="atlas_limit").set_value(5).run()
    assert at.button(key="atlas_cancel_btn").disabled  # nothing runs: nothing to cancel
    cancelled = lambda: any("Cancelled" in w.value for w in at.warning)  # noqa: E731
    assert not cancelled()
    # a job in flight (the Run button's callback set atlas_running) meets a cancel request at its first batch
    at.session_state["atlas_running"] = True
    at.session_state["atlas_cancel"] = "requested"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert cancelled() and not at.success and len(at.get("plotly_chart")) == 0
    assert at.session_state["atlas_running"] is False
    at.number_input(key="atlas_limit").set_value(4).run()  # other settings: nothing was cancelled there
    assert not cancelled() and any("Press **Run atlas**" in i.value for i in at.info)
    at.number_input(key="atlas_limit").set_value(5).run()  # back to the cancelled settings: the notice is theirs
    assert cancelled()
    at.button(key="atlas_run").click().run()  # a finished run: no notice any more, here or elsewhere
    assert not at.exception and at.success and not cancelled()
    at.number_input(key="atlas_limit").set_value(3).run()
    assert not cancelled()


def test_page_opens_a_cli_csv(corpus_file, tmp_path, monkeypatch):
    """A CSV written by the command line (e.g. a cluster run) opens on the page: grids, map, same table."""
    from viz.cli.main import main

    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(corpus_file))
    out = tmp_path / "stats.csv"
    assert main(["atlas", "--model", "tiny-bert", "--corpus", str(corpus_file), "--out", str(out), "--quiet",
                 "--words"]) == 0
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/atlas.py").run()
    at.radio(key="atlas_source").set_value("Open a result CSV").run()
    assert "python -m viz atlas --model" in " ".join(i.value for i in at.info)  # how to make one
    at.file_uploader(key="atlas_result_upload").set_value(("stats.csv", out.read_bytes(), "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert "2 layers × 4 heads" in at.success[0].value
    assert len(at.get("plotly_chart")) == 3  # statistic grid, roles, head map (no sentences, no importance)
    cli = pd.read_csv(out)
    table = at.dataframe[0].value.reset_index()
    assert list(table.columns) == list(cli.columns)  # word_* columns too
    labels = ["layer", "head", "role", "word_role"]
    assert (table[labels].values == cli[labels].values).all()
    assert np.allclose(table["entropy"].to_numpy(float), cli["entropy"].to_numpy(float), atol=1e-6)
    at.radio(key="atlas_level").set_value("words").run()
    at.selectbox(key="atlas_stat").set_value("prev").run()
    assert not at.exception, [e.value for e in at.exception]
    # a table written before the `first` column existed still opens (that column empty)
    older = cli.drop(columns=["first", "word_first"]).to_csv(index=False).encode()
    at.file_uploader(key="atlas_result_upload").set_value(("older.csv", older, "text/csv")).run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert at.dataframe[0].value["first"].isna().all()
    at.file_uploader(key="atlas_result_upload").set_value(("x.csv", b"a,b\n1,2\n", "text/csv")).run()
    assert "not a head-atlas table" in at.error[0].value and not at.exception


def test_page_too_large_corpus_says_how_to_run_it(corpus_file, monkeypatch):
    monkeypatch.setenv("VIZ_SAMPLE_CORPUS", str(corpus_file))
    big = "".join(f"Sentence {i}.\n" for i in range(10_001)).encode()
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/atlas.py").run()
    at.radio(key="atlas_source").set_value("Upload a file").run()
    at.file_uploader(key="atlas_upload").set_value(("big.txt", big, "text/plain")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "10,001 sentences" in at.error[0].value
    hint = " ".join(i.value for i in at.info)
    assert "python -m viz atlas --model minilm --corpus big.txt --out stats.csv" in hint and "Open a result CSV" in hint
