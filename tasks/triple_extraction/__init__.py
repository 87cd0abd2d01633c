"""Triple (relation) extraction from Chinese text: GPLinker and the 2020 subject-pointer +
conditional-LayerNorm model behind one interface.

``data`` reads and writes DuIE / LIC2019 JSON lines and schemas, ``spans`` maps entities to token
spans through the tokenizer's offsets, ``models`` builds, trains and decodes both models,
``metrics`` scores triples, ``cli`` is ``bert4x triples``. ``data/`` holds a hand-written
DuIE-format sample and its schema.
"""

from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "data" / "duie_sample.jsonl"
SAMPLE_SCHEMA = Path(__file__).resolve().parent / "data" / "duie_schema.jsonl"
