"""The ``bert4x`` command line, run as a user runs it (a subprocess of the installed entry)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bert4x import build_transformer_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=24, max_position_embeddings=16)


def bert4x(*args):
    return subprocess.run([sys.executable, "-m", "bert4x.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_selfcheck_prints_round_trip_table():
    result = bert4x("selfcheck")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "->" in line]
    assert len(lines) == 7
    assert all(float(line.split()[-1]) < 1e-4 for line in lines)


def test_convert_and_inspect(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    build_transformer_model(config, model="roformer", with_mlm=True,
                            return_keras_model=False).save_google_checkpoint(tmp_path / "m.ckpt")
    result = bert4x("convert", "--config", config, "--checkpoint", tmp_path / "m.ckpt",
                    "--model", "roformer", "--with-mlm", "--to-hf", tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hf" / "model.safetensors").exists()
    result = bert4x("inspect", tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    assert "format: hf" in result.stdout and "looks like: roformer" in result.stdout
    assert "roformer.encoder.layer.0.attention.self.query.weight" in result.stdout


def test_bad_input_gives_a_message_not_a_traceback(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(dict(CONFIG, hidden_sise=16)))
    result = bert4x("convert", "--config", config, "--checkpoint", tmp_path, "--to-hf", tmp_path)
    assert result.returncode == 2
    assert "unknown config key 'hidden_sise'" in result.stderr
    assert "Traceback" not in result.stderr


def test_builder_argument_errors_and_unreadable_config_are_messages(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    result = bert4x("convert", "--config", config, "--checkpoint", tmp_path, "--model",
                    "roformer_v2", "--with-pool", "--to-hf", tmp_path / "out")
    assert result.returncode == 2
    assert "'roformer_v2' has no pooler" in result.stderr and "Traceback" not in result.stderr
    result = bert4x("convert", "--config", tmp_path, "--checkpoint", tmp_path, "--to-hf", tmp_path)
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("task, data", [
    ("cosent", "pretrained/data/sts-b-zh/test.data"),
    ("kgclue", "pretrained/data/kgclue/test_public.json"),
    ("triples", "tasks/triple_extraction/data/duie_sample.jsonl"),
])
def test_evaluating_a_directory_without_a_run_says_how_to_make_one(tmp_path, task, data):
    result = bert4x(task, "evaluate", "--work-dir", tmp_path, "--data", ROOT / data)
    assert result.returncode == 2
    assert (f"{tmp_path} holds no {task} run" in result.stderr
            and f"train one with `bert4x {task} train`" in result.stderr)
    assert "Traceback" not in result.stderr


def test_models_lists_the_registry(capsys):
    from bert4x.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "roformer_zh_tiny (embedded default)" in out
    assert "model='gau_alpha'" in out and "vocab_size=50000" in out
    assert "model='albert'" in out and "model='electra'" in out


def test_every_registry_entry_names_a_family_we_build():
    from bert4x.models.transformer import MODELS
    from pretrained.registry import CHECKPOINTS

    assert {entry.model for entry in CHECKPOINTS} <= set(MODELS)


def test_only_the_command_quiets_tensorflow_c_logs():
    """The ``bert4x`` console script sets TF_CPP_MIN_LOG_LEVEL on import (before TensorFlow
    loads); a program that merely imports bert4x keeps what importing Keras alone gives (JAX,
    when installed, sets the variable to 1 itself)."""
    probe = ("import sys; sys.argv[0] = {!r}; import {}, os; "
             "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def level(argv0, module):
        result = subprocess.run([sys.executable, "-c", probe.format(argv0, module)], env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()[-1]

    assert level("/venv/bin/bert4x", "bert4x") == "3"
    assert level("my_script.py", "bert4x") == level("my_script.py", "keras") != "3"
