"""Serving models over HTTP: dynamic batching and a FastAPI app with limits and metrics
(``pip install -e ".[serve]"``)."""

from bert4x.serving.app import (BadRequest, BatchFunction, Endpoint, Limits, check_text,
                                check_texts, create_app)
from bert4x.serving.batching import DynamicBatcher, ServerBusy, call_overhead_tokens

__all__ = ["BadRequest", "BatchFunction", "DynamicBatcher", "Endpoint", "Limits", "ServerBusy",
           "call_overhead_tokens", "check_text", "check_texts", "create_app"]
