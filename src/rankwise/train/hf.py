"""Any rankwise method inside transformers.Trainer: a callback for the hooks, a helper for the optimizer.

    model = rankwise.adapt(model, "lora", rank=8)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                      optimizers=(build_optimizer(model, args), None), callbacks=[RankwiseCallback()])

Which hook runs where:
    init_from_data   on_train_begin, on the first `init_batches` batches of the train dataset in order
                     (indexed directly and collated with the loader's collate_fn, so the Trainer's shuffling
                     and RNG are untouched); at the first on_step_begin instead if a Trainer version hands
                     callbacks no dataloader at train begin. Skipped when resuming (the checkpoint already
                     holds the initialised adapter). The optimizer exists by then, so inits must change
                     parameters in place rather than replace them.
    regularizer      on_pre_optimizer_step: its gradient is back-propagated and added to the gradients
                     once per optimizer step (equal to adding it to every micro-batch's loss / accumulation).
    after_step       on_step_end, with a StepContext: state.global_step, the optimizer and scheduler,
                     state.max_steps, and the learning rates of the step just taken (recorded in
                     on_optimizer_step, before the Trainer steps the scheduler).
    finalize         on_train_end.

Difference from rankwise's own loop (rankwise.train.loop), where the regularizer is part of the loss:
the Trainer calls on_pre_optimizer_step *after* gradient clipping, so here the regularizer's gradient is
not clipped, and its value is not included in the logged loss (it is kept in `last_regularizer`).
Under DDP the regularizer's gradient is not all-reduced, which is harmless: it depends only on the
parameters, which are identical on every process. With fp16 loss scaling and max_grad_norm=0 the other
gradients are still scaled at that point, so use bf16/fp32 or keep clipping on; DeepSpeed is not supported.
"""

from __future__ import annotations

import itertools

import torch
from transformers import TrainerCallback, TrainingArguments

from ..adapters import StepContext, hooks
from ..optim import trainer_optimizer


def build_optimizer(model: torch.nn.Module, args: TrainingArguments, name: str = "adamw",
                    **options) -> torch.optim.Optimizer:
    """Optimizer `name` (rankwise.optim; AdamW by default, with the Trainer's betas and eps) over the
    active methods' parameter groups, or the trainable weights of a model without adapters
    (rankwise.optim.trainer_optimizer), with the Trainer's lr and weight decay; pass it as
    Trainer(optimizers=(build_optimizer(model, args), None))."""
    if name == "adamw":
        options = {"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon, **options}
    return trainer_optimizer(model, name, args.learning_rate, args.weight_decay, **options)


def first_batches(dataloader, count: int, batch_size: int, device: torch.device) -> list[dict]:
    """The first `count` batches of the loader's dataset in index order, collated with its collate_fn."""
    dataset = dataloader.dataset
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        rows = [dataset[i] for i in range(min(len(dataset), count * batch_size))]
    else:  # an IterableDataset: read from a fresh iterator
        rows = list(itertools.islice(iter(dataset), count * batch_size))
    batches = [dataloader.collate_fn(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]


class RankwiseCallback(TrainerCallback):
    """Calls a rankwise method's training hooks from transformers.Trainer; see the module docstring."""

    def __init__(self, init_batches: int = 4):
        self.init_batches = init_batches
        self.initialised = False
        self.last_regularizer: float | None = None
        self._group_lrs: list[float] | None = None

    def _init_from_data(self, args, state, model, train_dataloader) -> None:
        self.initialised = True
        if state.global_step > 0:  # resumed: the adapter comes from the checkpoint
            return
        device = next(model.parameters()).device
        batches = first_batches(train_dataloader, self.init_batches, args.per_device_train_batch_size, device)
        hooks.init_from_data(model, batches)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if train_dataloader is not None and not self.initialised:
            self._init_from_data(args, state, model, train_dataloader)

    def on_step_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if not self.initialised and train_dataloader is not None:
            self._init_from_data(args, state, model, train_dataloader)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        penalty = hooks.regularizer(model)
        if penalty is not None:
            penalty.backward()
            self.last_regularizer = float(penalty.detach())

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:
            self._group_lrs = [group["lr"] for group in optimizer.param_groups]

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        context = StepContext(state.global_step, optimizer, lr_scheduler, state.max_steps or None,
                              self._group_lrs)
        hooks.after_step(model, context)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        hooks.finalize(model)
