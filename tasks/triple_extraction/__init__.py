"""Triple (relation) extraction from Chinese text: GPLinker and the 2020 subject-pointer +
conditional-LayerNorm model behind one interface.

``data`` reads and writes DuIE / LIC2019 JSON lines and schemas, ``spans`` maps entities to token
spans through the tokenizer's offsets, ``models`` builds, trains and decodes both models,
``metrics`` scores triples, ``cli`` is ``bert4x triples``. ``data/`` holds two hand-written
DuIE-format samples and their schema: ``SAMPLE`` covers every overlap pattern (the tests'),
``MORE_SAMPLE`` adds texts enough for a held-out score (the demo's).
"""

from pathlib import Path

_DATA = Path(__file__).resolve().parent / "data"
SAMPLE = _DATA / "duie_sample.jsonl"
MORE_SAMPLE = _DATA / "duie_more.jsonl"
SAMPLE_SCHEMA = _DATA / "duie_schema.jsonl"
