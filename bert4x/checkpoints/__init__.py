"""Reading, loading and exporting checkpoints (Google TF, HF safetensors / PyTorch)."""

from bert4x.checkpoints.export import export_huggingface, hf_config, save_google_checkpoint
from bert4x.checkpoints.loader import LoadReport, guess_architecture, load_checkpoint
from bert4x.checkpoints.names import GOOGLE, HF, weight_names
from bert4x.checkpoints.readers import Checkpoint, CheckpointError, open_checkpoint

__all__ = [
    "GOOGLE", "HF", "Checkpoint", "CheckpointError", "LoadReport", "export_huggingface",
    "guess_architecture", "hf_config", "load_checkpoint", "open_checkpoint", "save_google_checkpoint",
    "weight_names",
]
