"""Any saved Keras model on token and segment ids, served as ``POST /predict``.

``{"texts": [...]}`` in; out, per text, its tokens and each model output: a per-token output
(``[batch, length, ...]``) cut to the text's own tokens, anything else as is. Texts are cut to
``maxlen`` tokens and batched like the task services.
"""

from __future__ import annotations

from typing import List

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictStr

from bert4x.serving.app import BatchFunction, Endpoint, Limits, check_texts
from bert4x.serving.batching import call_overhead_tokens


class Texts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: List[StrictStr]


class ModelService:
    name = "model"

    def __init__(self, model_path, vocab, limits: Limits, maxlen: int = 512):
        import keras

        from bert4x.export import input_name, output_names
        from bert4x.tokenizers import Tokenizer

        self.model = keras.saving.load_model(model_path, compile=False)
        names = [input_name(tensor.name) for tensor in self.model.inputs]
        if names != ["token_ids", "segment_ids"]:
            raise ValueError(f"{model_path}: /predict feeds token and segment ids; this model "
                             f"takes {names}")
        self.tokenizer, self.maxlen, self.limits = Tokenizer(vocab), maxlen, limits
        self.outputs = output_names(self.model)
        self.overhead_tokens = call_overhead_tokens(self.model)

    def _call(self, ids: List[List[int]]):
        from bert4x.training import sequence_padding

        tokens = sequence_padding(ids)
        outputs = self.model.predict_on_batch([tokens, np.zeros_like(tokens)])
        return outputs if isinstance(outputs, (list, tuple)) else [outputs]

    def _predict(self, texts: List[str]) -> List[dict]:
        from bert4x.training import split_by_length

        ids = self.tokenizer.encode_batch(texts, maxlen=self.maxlen)[0]
        results: List[dict] = [{} for _ in texts]
        for group in split_by_length([len(row) for row in ids], self.overhead_tokens):
            outputs = [np.asarray(output) for output in self._call([ids[i] for i in group])]
            for row, index in enumerate(group):
                length = len(ids[index])
                results[index] = {
                    "tokens": self.tokenizer.ids_to_tokens(ids[index]),
                    **{name: (output[row, :length] if output.ndim >= 3 else output[row]).tolist()
                       for name, output in zip(self.outputs, outputs)}}
        return results

    def batch_functions(self):
        return {"predict": BatchFunction(self._predict)}

    def endpoints(self):
        return [Endpoint("/predict", Texts, self.predict, "the model's outputs for each text")]

    async def predict(self, body: Texts, submit):
        check_texts(body.texts, self.limits)
        return {"results": await submit("predict", body.texts)}
