"""The ported bert4keras examples run end to end in quick mode (BERT4X_EXAMPLES_QUICK=1: one
short epoch on a slice of the shipped data), each printing the metric its script reports."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: example -> text its output must contain (the metric line the script prints).
EXPECTED = {
    "task_sentiment_albert.py": "final test acc:",
    "task_sentence_similarity_lcqmc.py": "final test acc:",
    "task_seq2seq_autotitle_csl.py": "valid_data: {'rouge-1':",
    "task_relation_extraction.py": "best f1:",
    "task_relation_extraction_gplinker.py": "best f1:",
    "task_sequence_labeling_ner_crf.py": "test:  f1:",
    "task_sequence_labeling_ner_global_pointer.py": "valid:  f1:",
    "basic_masked_language_model.py": "",
}


def test_every_example_is_listed():
    scripts = {p.name for p in EXAMPLES.glob("*.py") if p.name != "settings.py"}
    assert scripts == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_in_quick_mode(script, tmp_path):
    env = dict(os.environ, BERT4X_EXAMPLES_QUICK="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert EXPECTED[script] in done.stdout, done.stdout[-2000:]
    if script == "basic_masked_language_model.py":  # the two masked characters, decoded
        assert len(done.stdout.strip().splitlines()[-1]) == 2
