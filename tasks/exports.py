"""The model a finished task run sends out of Keras, and what a server needs beside it.

A work dir says its task by its settings file. The exported graph is the part that is one Keras
model; the rest stays with the server and is named in ``export.json``: the CoSENT vectors'
normalisation, triple decoding from span scores, and KgCLUE's beam search over the KB tree.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional
import keras

from tasks.cosent.task import SETTINGS_FILE as COSENT_SETTINGS
from tasks.kgclue.task import SETTINGS_FILE as KGCLUE_SETTINGS
from tasks.triple_extraction.task import SETTINGS_FILE as TRIPLES_SETTINGS

BEAM_SIZE = 3  # the KgCLUE Answerer's default
TASK_OF_SETTINGS = {COSENT_SETTINGS: "cosent", KGCLUE_SETTINGS: "kgclue",
                    TRIPLES_SETTINGS: "triples"}


def task_of(work_dir) -> str:
    """The task whose settings file the run directory holds."""
    found = [task for name, task in TASK_OF_SETTINGS.items()
             if os.path.exists(os.path.join(work_dir, name))]
    if len(found) != 1:
        what = "no task run" if not found else f"several task runs ({', '.join(found)})"
        raise ValueError(f"{work_dir} holds {what}: a run directory has exactly one of "
                         f"{', '.join(TASK_OF_SETTINGS)}")
    return found[0]


@dataclasses.dataclass
class Exportable:
    task: str
    model: keras.Model
    tokenizer: object
    maxlen: int
    metadata: dict
    endpoints: Optional[dict] = None  # more SavedModel signatures: {name: (fn, signature)}


def exportable(work_dir) -> Exportable:
    """The trained inference model of a finished run, with its tokenizer and ``maxlen``."""
    task = task_of(work_dir)
    if task == "cosent":
        from tasks.cosent.task import Settings, load_trained_encoder

        encoder = load_trained_encoder(work_dir)
        settings = Settings.load(work_dir)
        return Exportable(task, encoder.encoder, encoder.tokenizer, encoder.maxlen,
                          dict(task=task, pooling=settings.pooling,
                               note="sentence vectors; divide by their norm for cosines"))
    if task == "kgclue":
        from tasks.kgclue.task import load_trained

        import tensorflow as tf

        from bert4x.generation.in_graph import beam_function, greedy_function

        settings, model, tokenizer, kb = load_trained(work_dir)
        decoding = dict(model=model, trie=kb.trie, end_id=tokenizer.sep_id, min_ends=3,
                        max_new_tokens=settings.key_maxlen)
        signature = [tf.TensorSpec((1, None), tf.int32, name="token_ids")]
        return Exportable(task, model, tokenizer, settings.question_maxlen + settings.key_maxlen,
                          dict(task=task, question_maxlen=settings.question_maxlen,
                               key_maxlen=settings.key_maxlen,
                               beam_size=BEAM_SIZE,
                               note="UniLM next-token logits; generate_greedy and "
                                    "generate_beam decode one encoded question under the KB "
                                    "tree in the graph (without the LCS look-ahead, which "
                                    "bert4x serve adds)"),
                          endpoints={"generate_greedy": (greedy_function(**decoding), signature),
                                     "generate_beam": (beam_function(**decoding,
                                                                     beam_size=BEAM_SIZE),
                                                       signature)})
    from tasks.triple_extraction.task import load_trained

    extractor = load_trained(work_dir)
    return Exportable(task, extractor.model.train_model, extractor.tokenizer,
                      extractor.settings.maxlen,
                      dict(task=task, kind=extractor.settings.kind,
                           predicates=list(extractor.schema.predicates),
                           note="span scores; decoding them into triples runs in the server"))


def export_run(work_dir, output_dir, formats=None) -> dict:
    """:func:`bert4x.export.export_model` on the run's inference model."""
    from bert4x.export import DEFAULT_FORMATS, export_model

    run = exportable(work_dir)
    return export_model(run.model, output_dir, formats or DEFAULT_FORMATS,
                        tokenizer=run.tokenizer, maxlen=run.maxlen, metadata=run.metadata,
                        endpoints=run.endpoints)
