"""Training: TrainConfig, finetune (the whole job), pretrain (from scratch), train (the loop), checkpoints,
the HF Trainer callback.

    result = rankwise.finetune({"model": "smollm2-135m", "task": "iso-dates", "max_steps": 150})
    result = rankwise.pretrain({"size": "tiny", "method": "galore", "max_steps": 300})

Under `torchrun` or `accelerate launch` the same call trains data-parallel; only the main process
evaluates and writes the outputs. `RankwiseCallback` (rankwise.train.hf) brings a method's hooks into
a transformers.Trainer instead.
"""

from .checkpoint import list_checkpoints, read_checkpoint, resolve_resume, verify_checkpoint
from .config import TrainConfig
from .loop import train
from .pretrain import pretrain
from .pretrain_config import PretrainConfig
from .quantize import quantize_base
from .run import finetune, split_examples
from .schedule import build_scheduler, warmup_cosine

__all__ = [
    "PretrainConfig", "TrainConfig", "build_scheduler", "finetune", "list_checkpoints", "pretrain",
    "quantize_base", "read_checkpoint", "resolve_resume", "split_examples", "train", "verify_checkpoint",
    "warmup_cosine",
]
