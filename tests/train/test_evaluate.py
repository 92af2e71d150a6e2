"""exact_match: greedy generation with left padding, whitespace-only normalisation."""

from __future__ import annotations

import pytest

from rankwise.data import bundled_task
from rankwise.errors import DataError
from rankwise.models import embedded, gguf, load
from rankwise.train import evaluate
from rankwise.train.evaluate import exact_match, generate_answers, normalize_answer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RANKWISE_CACHE", str(tmp_path_factory.mktemp("rankwise-cache")))
        gguf.ensure_tokenizer(embedded.package_file("smollm2-135m"))
        return load("tiny-llama")


def test_exact_match_on_tiny_llama_runs(tiny):
    model, tokenizer = tiny
    examples = bundled_task()[1][:5]
    result = exact_match(model, tokenizer, examples, max_new_tokens=4, batch_size=2, progress=False)
    assert 0.0 <= result["exact_match"] <= 1.0
    assert len(result["predictions"]) == 5 and all(isinstance(p, str) for p in result["predictions"])


def test_left_padding_gives_the_same_answers_as_one_by_one(tiny):
    model, tokenizer = tiny
    prompts = ["hi", "a much longer prompt than the first one, so the batch needs padding"]
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=5, batch_size=2, progress=False)
    alone = generate_answers(model, tokenizer, prompts, max_new_tokens=5, batch_size=1, progress=False)
    assert batched == alone


def test_an_adapter_that_attends_over_the_sequence_generates_as_it_trained(tiny):
    import copy

    import torch

    import rankwise
    from rankwise.train.evaluate import format_prompt

    model, tokenizer = tiny
    model = rankwise.adapt(copy.deepcopy(model), "lorra", rank=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in (p for p in model.parameters() if p.requires_grad):
            param.add_(0.5 * torch.randn(param.shape, generator=gen))
    assert rankwise.adapters.needs_whole_sequence(model)
    prompts = ["hi", "a much longer prompt than the first one, so a batch would need padding"]

    def whole_sequence_greedy(prompt: str) -> str:  # every step re-reads the whole, unpadded sequence
        ids = tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False, return_tensors="pt")
        ids, new = ids["input_ids"], []
        with torch.no_grad():
            for _ in range(5):
                token = int(model(ids).logits[0, -1].argmax())
                if token == tokenizer.eos_token_id:
                    break
                new.append(token)
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        return tokenizer.decode(new, skip_special_tokens=True)

    answers = generate_answers(model, tokenizer, prompts, max_new_tokens=5, batch_size=2, progress=False)
    assert answers == [whole_sequence_greedy(p) for p in prompts]


def test_training_mode_is_restored(tiny):
    model, tokenizer = tiny
    model.train()
    try:
        generate_answers(model, tokenizer, ["hi"], max_new_tokens=1, progress=False)
        assert model.training
    finally:
        model.eval()


def test_normalisation_strips_surrounding_whitespace_only():
    assert normalize_answer("  2021-03-05\n") == "2021-03-05"
    assert normalize_answer("2021-03-05.") != "2021-03-05"
    assert normalize_answer("ABC") != normalize_answer("abc")


def test_exact_match_counts_normalised_hits(monkeypatch):
    predictions = [" 2021-03-05\n", "2021-03-05.", "The date is 2021-03-05"]
    monkeypatch.setattr(evaluate, "generate_answers", lambda *args, **kwargs: predictions)
    examples = [{"prompt": "p", "answer": "2021-03-05"}] * 3
    result = exact_match(None, None, examples, progress=False)
    assert result == {"exact_match": pytest.approx(1 / 3), "predictions": predictions}


def test_no_examples_is_an_error():
    with pytest.raises(DataError, match="no examples"):
        exact_match(None, None, [])
