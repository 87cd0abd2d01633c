"""Entities as token spans, found through the tokenizer's character offsets.

An entity is located in the *text* (its first occurrence), and its character span is mapped to
the tokens whose offsets start and end exactly there. A span that cuts through a token, or
that truncation removed, cannot be labelled and is reported instead. Decoding maps a token span
back to ``text[start of first token : end of last token]``, so predicted entities keep the
text's own spelling (case, full-width characters) even though the tokenizer normalises them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from tasks.triple_extraction.data import Example, Schema, Triple

Span = Tuple[int, int]  # first and last token index, inclusive


@dataclass
class EncodedText:
    text: str
    token_ids: List[int]
    offsets: List[Tuple[int, int]]

    def span_text(self, span: Span) -> str:
        return self.text[self.offsets[span[0]][0]:self.offsets[span[1]][1]]


@dataclass
class LabelledText(EncodedText):
    spans: List[Tuple[Span, int, Span]]  # (subject span, predicate index, object span)
    unplaced: List[Tuple[Triple, str]]  # triples that could not be labelled, with the reason


def encode_text(text: str, tokenizer, maxlen: int) -> EncodedText:
    ids, _, offsets = tokenizer.encode(text, maxlen=maxlen, return_offsets=True)
    return EncodedText(text, ids, offsets)


def locate(encoded: EncodedText, entity: str) -> Optional[Span]:
    """The token span of ``entity``'s first occurrence in the text, or None."""
    start = encoded.text.find(entity)
    if start < 0:
        return None
    end = start + len(entity)
    first = last = None
    for index, (token_start, token_end) in enumerate(encoded.offsets):
        if token_end <= token_start:
            continue  # [CLS], [SEP]
        if token_start == start:
            first = index
        if token_end == end and first is not None:
            last = index
            break
    return None if first is None or last is None else (first, last)


def label_example(example: Example, schema: Schema, tokenizer, maxlen: int) -> LabelledText:
    encoded = encode_text(example.text, tokenizer, maxlen)
    spans, unplaced = [], []
    for triple in example.triples:
        subject, obj = locate(encoded, triple.subject), locate(encoded, triple.object)
        if subject is None or obj is None:
            which = "subject" if subject is None else "object"
            entity = triple.subject if subject is None else triple.object
            reason = (f"{which} {entity!r} not in the text" if entity not in example.text else
                      f"{which} {entity!r} does not start and end on token boundaries within "
                      f"the first {maxlen} tokens")
            unplaced.append((triple, reason))
            continue
        spans.append((subject, schema.index[triple.predicate], obj))
    return LabelledText(encoded.text, encoded.token_ids, encoded.offsets, spans, unplaced)


def spans_to_triples(encoded: EncodedText, spans: Sequence[Tuple[Span, int, Span]],
                     schema: Schema) -> List[Triple]:
    """Distinct triples, in first-seen order, from decoded token spans. Spans reaching a
    special token or the padding (possible in raw model output) are dropped."""
    def real(span):
        return all(i < len(encoded.offsets) and encoded.offsets[i][1] > encoded.offsets[i][0]
                   for i in span) and span[0] <= span[1]

    triples = {}  # a dict keeps first-seen order and removes repeats in constant time
    for subject, predicate, obj in spans:
        if real(subject) and real(obj):
            triples.setdefault(Triple(encoded.span_text(subject), schema.predicates[predicate],
                                      encoded.span_text(obj)))
    return list(triples)
