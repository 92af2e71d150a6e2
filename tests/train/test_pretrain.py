"""pretrain(): the corpus split, what each method trains, bitwise resume of a model trained whole, and a
checkpoint never half written."""

import json

import pytest
import torch

from rankwise.errors import AdapterFileError, DataError
from rankwise.models.scratch import byte_tokenizer
from rankwise.optim.projected import ProjectedAdamW
from rankwise.train import resolve_resume
from rankwise.train.pretrain import corpus_blocks, pretrain
from rankwise.train.pretrain_config import PretrainConfig
from rankwise.train.trainee import AdapterTrainee, ModelTrainee, checkpoint_weights

from .test_train_resume import Crash

FAST = {"max_length": 32, "per_device_train_batch_size": 4, "eval_blocks": 4, "progress": False,
        "warmup_steps": 2, "warmup_ratio": 0.0}


def settings(tmp_path, **overrides) -> dict:
    return {**FAST, "output_dir": str(tmp_path), **overrides}


def test_the_bundled_corpus_validates_on_text_it_never_trains_on():
    config = PretrainConfig(max_length=64, eval_blocks=8)
    train, held, source = corpus_blocks(config, byte_tokenizer())
    assert train.shape[1] == held.shape[1] == 64 and len(held) == 8 and len(train) > 1000
    assert "pydoc_data" in source
    trained = {tuple(row) for row in train.tolist()}
    assert not any(tuple(row) in trained for row in held.tolist())


def test_a_corpus_file_is_split_with_the_seed(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text("".join(f"line {i} of some plain English text.\n" for i in range(200)))
    config = PretrainConfig(corpus=str(corpus), max_length=32, eval_split=0.25)
    train, held, source = corpus_blocks(config, byte_tokenizer())
    assert source == str(corpus) and len(held) == round(0.25 * (len(train) + len(held)))
    again = corpus_blocks(config, byte_tokenizer())
    assert torch.equal(again[0], train) and torch.equal(again[1], held)


@pytest.mark.parametrize("content, words", [
    (b"", "holds no text"),
    (b"\xff\xfe\x00bad bytes", "UTF-8"),
    (b"just a few words", "fewer than one block"),
    (b"x" * 40, "one block of 32 tokens only"),
])
def test_a_bad_corpus_file_fails_with_its_name(tmp_path, content, words):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    with pytest.raises(DataError) as err:
        pretrain(settings(tmp_path / "out", corpus=str(corpus), max_steps=1))
    assert str(corpus) in str(err.value) and words in str(err.value)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_projected_optimizers_leave_embeddings_head_and_norms_plain(tmp_path, monkeypatch):
    seen = {}
    real = ModelTrainee.optimizer

    def spy(self, config):
        seen["optimizer"], seen["model"] = real(self, config), self.model
        return seen["optimizer"]

    monkeypatch.setattr(ModelTrainee, "optimizer", spy)
    pretrain(settings(tmp_path, method="galore", rank=8, max_steps=2))
    optimizer, model = seen["optimizer"], seen["model"]
    assert isinstance(optimizer, ProjectedAdamW)
    projected = {id(p) for g in optimizer.param_groups if "rank" in g for p in g["params"]}
    assert id(model.model.layers[0].self_attn.q_proj.weight) in projected
    for plain in (model.model.embed_tokens.weight, model.lm_head.weight, model.model.norm.weight):
        assert id(plain) not in projected and "basis" not in optimizer.state[plain]


def _crash_after(monkeypatch, step: int) -> None:
    real = ModelTrainee.after_step

    def after_step(self, context):
        real(self, context)
        if context.step == step:
            raise Crash(f"simulated crash after step {step}")

    monkeypatch.setattr(ModelTrainee, "after_step", after_step)


def _final_tensors(out) -> dict:
    from safetensors.torch import load_file

    folder = out / "model"
    return {**load_file(folder / "model.safetensors"), **load_file(folder / "rankwise.safetensors")}


# galore: the checkpoint (step 4) falls between two basis refreshes (steps 1, 4, 7 of update interval 3);
# relora: a restart (step 3) merged into a frozen buffer before the checkpoint; sst: a round ends at 3.
@pytest.mark.parametrize("method, extra", [
    ("galore", {"rank": 4, "method_config": {"update_interval": 3}}),
    ("relora", {"rank": 4, "method_config": {"reset_every": 3}}),
    ("sst", {"rank": 4, "method_config": {"round_length": 3}}),
    ("lowrank", {"rank": 4, "reset_every": 3, "refactor_every": 3}),
])
def test_a_model_trained_whole_resumes_bitwise(tmp_path, monkeypatch, method, extra):
    common = dict(method=method, max_steps=7, save_every=2, **extra)
    pretrain(settings(tmp_path / "ref", **common))
    with monkeypatch.context() as patch:
        _crash_after(patch, 5)
        with pytest.raises(Crash):
            pretrain(settings(tmp_path / "cut", **common))
    assert resolve_resume("latest", tmp_path / "cut").name == "step-000004"
    assert (resolve_resume("latest", tmp_path / "cut") / "model.safetensors").is_file()
    result = pretrain(settings(tmp_path / "cut", resume="latest", **common))
    assert result["resumed_from"].endswith("step-000004")
    reference, resumed = _final_tensors(tmp_path / "ref"), _final_tensors(tmp_path / "cut")
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    log = [json.loads(line)["loss"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    ref_log = [json.loads(line)["loss"] for line in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    assert log == ref_log


def test_a_crash_while_saving_leaves_the_last_checkpoint_whole(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = ModelTrainee.save

    def save(self, folder):
        if "000004" in str(folder) or folder.name.startswith(".step-000004"):
            (folder / "model.safetensors").write_bytes(b"half")
            raise Crash("simulated crash mid-save")
        real(self, folder)

    monkeypatch.setattr(ModelTrainee, "save", save)
    with pytest.raises(Crash):
        pretrain(settings(out, method="lowrank", rank=4, max_steps=6, save_every=2))
    folders = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert folders == ["step-000002"]
    assert resolve_resume("latest", out).name == "step-000002"


def test_a_checkpoint_of_the_other_kind_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    state = {"weights": {"adapter/adapter.safetensors": {}}}
    with pytest.raises(AdapterFileError, match=r"an adapter \(from rankwise finetune\); this run needs "
                                               r"model.safetensors"):
        checkpoint_weights(state, ModelTrainee(model), tmp_path)
    state = {"weights": {"model.safetensors": {}}}
    with pytest.raises(AdapterFileError, match=r"a whole model \(from rankwise pretrain\)"):
        checkpoint_weights(state, AdapterTrainee(model), tmp_path)
