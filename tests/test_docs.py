"""The documentation site builds in strict mode (every page, link and API cross-reference
resolves), and a broken cross-reference fails the build instead of rendering as plain text."""

import shutil
from pathlib import Path

import pytest

pytest.importorskip("mkdocstrings")
from mkdocs.commands.build import build  # noqa: E402
from mkdocs.config import load_config  # noqa: E402
from mkdocs.exceptions import Abort  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_site(site_dir, docs_dir=ROOT / "docs"):
    build(load_config(str(ROOT / "mkdocs.yml"), docs_dir=str(docs_dir), site_dir=str(site_dir)))


def test_the_site_builds_with_the_api_reference_and_the_task_guides(tmp_path):
    build_site(tmp_path / "site")
    layers = (tmp_path / "site" / "api" / "layers" / "index.html").read_text(encoding="utf-8")
    assert 'id="bert4x.layers.MultiHeadAttention"' in layers
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert 'href="api/models/#bert4x.models.build_transformer_model"' in index
    kgclue = (tmp_path / "site" / "tasks" / "kgclue" / "index.html").read_text(encoding="utf-8")
    assert "prefix tree" in kgclue


def test_a_broken_cross_reference_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    with open(docs / "index.md", "a", encoding="utf-8") as page:
        page.write("\nSee [the tokenizer][bert4x.tokenizers.NoSuchTokenizer].\n")
    with pytest.raises(Abort, match="strict mode"):
        build_site(tmp_path / "site", docs)
