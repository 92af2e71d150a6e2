"""RankwiseCallback and build_optimizer inside a real transformers.Trainer run on a tiny Llama."""

import pytest
import torch
from transformers import Trainer, TrainingArguments

import rankwise
from rankwise.adapters import hooks
from rankwise.data import collate
from rankwise.train.hf import RankwiseCallback, build_optimizer

from ..conftest import make_tiny_llama
from .train_helpers import adapter_tensors, synthetic_features


def make_trainer(tmp_path, callbacks, lr=1e-2, steps=3, **args):
    model = make_tiny_llama()
    torch.manual_seed(0)
    rankwise.adapt(model, "lora", rank=4)
    model.train()
    training_args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=2, learning_rate=lr,
        report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0, **args)
    return Trainer(model=model, args=training_args, train_dataset=synthetic_features(n=8),
                   data_collator=lambda rows: collate(rows, 0), callbacks=callbacks,
                   optimizers=(build_optimizer(model, training_args), None))


def test_callback_calls_every_hook_at_its_event(tmp_path, monkeypatch):
    calls = {"init": [], "reg": 0, "after": [], "final": 0}
    monkeypatch.setattr(hooks, "init_from_data",
                        lambda m, batches: calls["init"].append([b["input_ids"].shape for b in batches]))
    monkeypatch.setattr(hooks, "after_step", lambda m, step: calls["after"].append(
        (step.step, step.total_steps, step.optimizer is not None, step.scheduler is not None,
         step.group_lrs)))
    monkeypatch.setattr(hooks, "finalize", lambda m: calls.__setitem__("final", calls["final"] + 1))

    def regularizer(model):
        calls["reg"] += 1
        return None

    monkeypatch.setattr(hooks, "regularizer", regularizer)
    make_trainer(tmp_path, [RankwiseCallback(init_batches=3)], gradient_accumulation_steps=2).train()
    assert calls["init"] == [[torch.Size([2, 8])] * 3]
    assert calls["reg"] == 3  # once per optimizer step, not per micro-batch
    # StepContext: steps taken, the run's length, the optimizer and scheduler, the rates just used.
    assert [call[:4] for call in calls["after"]] == [(s, 3, True, True) for s in (1, 2, 3)]
    assert all(len(call[4]) == 1 and call[4][0] > 0 for call in calls["after"])
    assert calls["final"] == 1


def test_regularizer_gradient_reaches_the_parameters(tmp_path, monkeypatch):
    plain = make_trainer(tmp_path / "plain", [RankwiseCallback()])
    plain.train()
    # A strong pull of every trainable tensor towards zero: the tuned adapter must come out smaller.
    monkeypatch.setattr(hooks, "regularizer", lambda model: 10.0 * sum(
        p.pow(2).sum() for p in model.parameters() if p.requires_grad))
    callback = RankwiseCallback()
    pulled = make_trainer(tmp_path / "pulled", [callback])
    pulled.train()
    norm = lambda model: sum(v.norm() for v in adapter_tensors(model).values())  # noqa: E731
    assert norm(pulled.model) < norm(plain.model)
    assert callback.last_regularizer is not None and callback.last_regularizer > 0


def test_build_optimizer_uses_the_methods_param_groups(tmp_path):
    trainer = make_trainer(tmp_path, [RankwiseCallback()], weight_decay=0.1)
    groups = hooks.param_groups(trainer.model, trainer.args.learning_rate)
    opt = trainer.optimizer
    assert [len(g["params"]) for g in opt.param_groups] == [len(g["params"]) for g in groups]
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.1)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in trainer.model.parameters() if p.requires_grad}
