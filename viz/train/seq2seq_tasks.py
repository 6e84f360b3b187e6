"""Synthetic seq2seq tasks with a KNOWN word alignment, and their word-level tokenizers.

The encoder–decoder page needs models whose cross-attention can be checked against
ground truth: for every target word we know which source word it comes from. Each
task is a `make_examples(n, seed, split="train")` function returning

    [(source: str, target: str, alignment: list[int | None]), ...]

where `alignment[i]` is the index of the source word that target word `i` copies or
translates, or None (punctuation the model has to invent, e.g. the `-` in a date).

"Word" means a pre-token of `words(text)`: runs of letters/digits, or runs of
punctuation (the `tokenizers` `Whitespace` pre-tokenizer, regex `\\w+|[^\\w\\s]+`).
The tokenizer is word-level, so word i of a source is token i of its input ids and
the alignment is token-level too (the appended `</s>` is the last source token).

Held-out split: an example belongs to the test split when the CRC32 of its canonical
content is 0 mod 10, so `split="test"` examples are never seen in training.
"""
from __future__ import annotations

import calendar
import datetime as dt
import random
import re
import zlib
from pathlib import Path
from typing import Callable

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0, 1, 2, 3 in every task vocabulary
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

Example = tuple[str, str, list]  # (source, target, alignment: list[int | None])
_WORD_RE = re.compile(r"\w+|[^\w\s]+")
_WORDS_FILE = Path(__file__).with_name("words_1000.txt")


def words(text: str) -> list[str]:
    """Split `text` as the tokenizer's pre-tokenizer does (lower-cased, like its normalizer)."""
    return _WORD_RE.findall(text.lower())


def _is_test(key: str) -> bool:
    return zlib.crc32(key.encode()) % 10 == 0


def _sample(n: int, seed: int, split: str, draw: Callable[[random.Random], tuple[str, Example]]):
    """Draw examples until n of the requested split are found. `draw` -> (split key, example)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    rng = random.Random(seed)
    out: list[Example] = []
    while len(out) < n:
        key, ex = draw(rng)
        if _is_test(key) == (split == "test"):
            out.append(ex)
    return out


# --------------------------------------------------------------------------- dates
MONTHS = [calendar.month_name[m] for m in range(1, 13)]  # "January" ... "December"
YEARS = (1900, 2099)


def _date_example(d: dt.date, fmt: int) -> Example:
    """One date in input format `fmt` (0: "3 March 2021", 1: "03/03/2021" DD/MM/YYYY,
    2: "March 3, 2021") -> ("...", "2021 - 03 - 03", alignment)."""
    month = MONTHS[d.month - 1]
    if fmt == 0:
        src, (iy, im, iday) = f"{d.day} {month} {d.year}", (2, 1, 0)
    elif fmt == 1:  # words: 03 / 03 / 2021
        src, (iy, im, iday) = f"{d.day:02d}/{d.month:02d}/{d.year}", (4, 2, 0)
    else:  # words: March 3 , 2021
        src, (iy, im, iday) = f"{month} {d.day}, {d.year}", (3, 0, 1)
    tgt = f"{d.year} - {d.month:02d} - {d.day:02d}"
    return src, tgt, [iy, None, im, None, iday]


def make_dates(n: int, seed: int, split: str = "train") -> list[Example]:
    """Dates 1900–2099 in three formats -> ISO-like "YYYY - MM - DD" (spaces: one word each).

    The split is by calendar date, so a test date is unseen in every format.
    """
    first, span = dt.date(YEARS[0], 1, 1), (dt.date(YEARS[1], 12, 31) - dt.date(YEARS[0], 1, 1)).days

    def draw(rng: random.Random):
        d = first + dt.timedelta(days=rng.randint(0, span))
        return d.isoformat(), _date_example(d, rng.randrange(3))

    return _sample(n, seed, split, draw)


def dates_vocab() -> list[str]:
    """Every word the dates task can produce, lower-cased (the tokenizer lower-cases)."""
    nums = [str(i) for i in range(1, 32)] + [f"{i:02d}" for i in range(1, 10)]
    years = [str(y) for y in range(YEARS[0], YEARS[1] + 1)]
    return [m.lower() for m in MONTHS] + nums + years + ["/", ",", "-"]


# --------------------------------------------------------------------------- reverse
REVERSE_LEN = (3, 12)
UNK_RATE = 0.05
_LETTERS = "bcdfghjklmnpqrstvwxyz"


def reverse_vocab() -> list[str]:
    """The 1,000 most frequent lower-case English words, most frequent first
    (taken in order from the BERT uncased WordPiece vocabulary, which is frequency-ranked)."""
    return _WORDS_FILE.read_text().split()


def _zipf_cum(n: int) -> list[float]:
    acc, out = 0.0, []
    for r in range(n):
        acc += 1.0 / (r + 1)
        out.append(acc)
    return out


def make_reverse(n: int, seed: int, split: str = "train") -> list[Example]:
    """Reverse a 3–12 word sequence. Words are drawn with Zipf frequencies (p ∝ 1/rank)
    from `reverse_vocab()`; about 5% are replaced by a random out-of-vocabulary string,
    which the tokenizer maps to `<unk>` so the model learns to copy `<unk>` as well.

    Alignment: target word i <- source word (len - 1 - i).
    """
    vocab = reverse_vocab()
    cum = _zipf_cum(len(vocab))

    def draw(rng: random.Random):
        k = rng.randint(*REVERSE_LEN)
        ws = []
        for _ in range(k):
            if rng.random() < UNK_RATE:  # consonant-only: never a vocabulary word
                ws.append("".join(rng.choice(_LETTERS) for _ in range(rng.randint(4, 8))))
            else:
                ws.append(rng.choices(vocab, cum_weights=cum)[0])
        src, tgt = " ".join(ws), " ".join(reversed(ws))
        return src, (src, tgt, [k - 1 - i for i in range(k)])

    return _sample(n, seed, split, draw)


TASKS: dict[str, dict] = {
    "dates": dict(make_examples=make_dates, vocab=dates_vocab,
                  description='dates "3 March 2021" / "03/03/2021" (DD/MM/YYYY) / "March 3, 2021" '
                              '-> "2021 - 03 - 03"'),
    "reverse": dict(make_examples=make_reverse, vocab=reverse_vocab,
                    description="reverse a 3-12 word sequence (1,000-word vocabulary, "
                                "Zipf-sampled, ~5% unknown words -> <unk>)"),
}


def get_task(name: str) -> dict:
    """Registry lookup with the fix in the error message."""
    if name not in TASKS:
        raise KeyError(f"Unknown seq2seq task {name!r}; choose one of {sorted(TASKS)}.")
    return TASKS[name]


# --------------------------------------------------------------------------- tokenizer
def build_tokenizer(vocab: list[str]):
    """Word-level `PreTrainedTokenizerFast`: Lowercase normalizer, Whitespace pre-tokenizer,
    specials <pad>=0 <s>=1 </s>=2 <unk>=3, and a post-processor appending </s>.

    `tok(["3 March 2021"])["input_ids"]` -> [[word ids..., 2]]: exactly one id per word of
    `words(text)`, then </s>. Targets are encoded the same way (labels end in </s>).
    `save_pretrained(dir)` + `AutoTokenizer.from_pretrained(dir)` round-trips it.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate(SPECIALS)}
    for w in vocab:
        ids.setdefault(w, len(ids))
    tok = Tokenizer(models.WordLevel(vocab=ids, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS_ID)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", model_max_length=64, clean_up_tokenization_spaces=False)
