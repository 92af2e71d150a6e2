"""trainer_optimizer: parameter groups from a model, and a projected optimizer inside transformers.Trainer."""

import pytest
import torch
from transformers import Trainer, TrainingArguments

import rankwise
from rankwise.adapters import hooks
from rankwise.data import collate
from rankwise.errors import ConfigError
from rankwise.optim import memory_report, trainer_optimizer
from rankwise.optim.projected import ProjectedAdamW
from rankwise.optim.trainer import trainable_groups

from ..conftest import make_tiny_llama
from ..train.train_helpers import synthetic_features

BLOCK_MATRICES = [f"self_attn.{m}" for m in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
    [f"mlp.{m}" for m in ("gate_proj", "up_proj", "down_proj")]


def _names(model, params):
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_full_training_groups_project_the_block_matrices_only():
    model = make_tiny_llama()
    matrices, rest = trainable_groups(model, lr=1e-3)
    assert _names(model, matrices["params"]) == {f"model.layers.{i}.{m}.weight"
                                                  for i in range(2) for m in BLOCK_MATRICES}
    assert "model.embed_tokens.weight" in _names(model, rest["params"])
    assert "lm_head.weight" in _names(model, rest["params"])
    optimizer = trainer_optimizer(model, "galore", lr=1e-3, rank=2)
    assert optimizer.param_groups[0]["rank"] == 2 and optimizer.param_groups[0]["projector"] == "svd"
    assert "rank" not in optimizer.param_groups[1]  # embeddings, head and norms: plain AdamW
    assert all(not optimizer.is_projected(p, optimizer.param_groups[1]) for p in rest["params"])


def test_adapter_models_use_the_methods_param_groups():
    model = make_tiny_llama()
    rankwise.adapt(model, "lora", rank=4)
    groups = hooks.param_groups(model, 1e-3)
    optimizer = trainer_optimizer(model, "dct", lr=1e-3, rank=2)
    assert [[id(p) for p in g["params"]] for g in optimizer.param_groups] == \
        [[id(p) for p in g["params"]] for g in groups]
    assert {id(p) for g in groups for p in g["params"]} == \
        {id(p) for p in model.parameters() if p.requires_grad}


def test_reparametrized_factors_are_projected_and_frozen_models_are_refused():
    model = rankwise.reparametrize(make_tiny_llama(), "lowrank", rank=4)
    matrices, rest = trainable_groups(model, lr=1e-3)
    assert len(matrices["params"]) == 2 * 14 and all(p.ndim == 2 for p in matrices["params"])
    assert len(matrices["params"]) + len(rest["params"]) == len(list(model.parameters()))
    frozen = make_tiny_llama().requires_grad_(False)
    with pytest.raises(ConfigError, match="no parameter with requires_grad"):
        trainer_optimizer(frozen, "galore", lr=1e-3, rank=2)


def test_galore_inside_a_transformers_trainer(tmp_path):
    model = make_tiny_llama().train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = trainer_optimizer(model, "galore", lr=1e-2, rank=2)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2,
                             learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no",
                             logging_steps=1, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=synthetic_features(n=8),
                      data_collator=lambda rows: collate(rows, 0), optimizers=(optimizer, None))
    trainer.train()
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is optimizer
    weight = model.model.layers[0].self_attn.q_proj.weight  # 32×32, projected on the right
    state = optimizer.state[weight]
    assert state["step"] == 3 and state["exp_avg"].shape == (32, 2) and state["basis"].shape == (32, 2)
    # The basis stayed fixed (update interval 200 > 3 steps), so W moved only within span(P) on the right.
    delta = (weight - before["model.layers.0.self_attn.q_proj.weight"]).detach()
    basis = state["basis"]
    assert delta.norm() > 0
    torch.testing.assert_close(delta - delta @ basis @ basis.T, torch.zeros_like(delta), atol=1e-6, rtol=0)
    assert not torch.equal(model.model.embed_tokens.weight, before["model.embed_tokens.weight"])
    report = memory_report(model, trainer.optimizer)
    assert isinstance(optimizer, ProjectedAdamW)
    assert report["optimizer"]["total"] == report["expected"]["total"]
    plain = 2 * sum(p.numel() for p in model.parameters())
    assert report["optimizer"]["moments"]["elements"] < plain
