"""A list of tasks is learned in order: end_task between tasks, finalize once, a forgetting matrix."""

import json

import pytest

from rankwise.cli.main import main
from rankwise.errors import ConfigError
from rankwise.train import TrainConfig


def _task_file(path, offset):
    rows = [{"prompt": f"Add {offset} to {n}.", "answer": str(n + offset)} for n in range(12)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_codyra_learns_a_list_of_tasks_in_order(tmp_path, capsys):
    first, second = _task_file(tmp_path / "a.jsonl", 1), _task_file(tmp_path / "b.jsonl", 100)
    out = tmp_path / "run"
    argv = ["finetune", "model=tiny-llama", "method=codyra", "rank=4", "max_steps=3", "max_length=48",
            "per_device_train_batch_size=4", "eval_split=0.25", "max_new_tokens=3", "progress=false",
            f"output_dir={out}", f"data={json.dumps([first, second])}"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"] == [first, second]
    matrix = results["exact_match_after_each_task"]
    assert [len(row) for row in matrix] == [1, 2]
    assert all(0.0 <= value <= 1.0 for row in matrix for value in row)
    assert (out / "task-1" / "log.jsonl").is_file() and (out / "task-2" / "log.jsonl").is_file()
    saved = json.loads((out / "adapter" / "adapter.json").read_text())
    assert saved["method"] == "lora"  # CoDyRA's finalize folds every task into one plain LoRA
    assert results["steps"] == 6


def test_a_sequence_cannot_resume(tmp_path):
    first = _task_file(tmp_path / "a.jsonl", 1)
    with pytest.raises(ConfigError, match="cannot resume"):
        TrainConfig.from_dict({"model": "tiny-llama", "data": [first, first], "resume": "latest"})


def test_a_prompt_too_long_for_max_length_names_its_file_and_line(tmp_path):
    import json

    from rankwise.errors import DataError
    from rankwise.train import finetune

    data = tmp_path / "d.jsonl"
    rows = [{"prompt": "short", "answer": "a"}] * 3 + [{"prompt": "word " * 200, "answer": "b"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:4: an example's prompt is \d+ tokens"):
        finetune({"model": "tiny-llama", "data": str(data), "eval_split": 0.0, "max_length": 64,
                  "max_steps": 1, "output_dir": str(tmp_path / "run"), "progress": False})


def test_a_foreign_file_in_output_dir_adapter_stops_the_run_before_training(tmp_path):
    from rankwise.errors import AdapterFileError
    from rankwise.train import finetune

    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "adapter" / "notes.txt").write_text("mine")
    with pytest.raises(AdapterFileError, match="holds other files"):
        finetune({"model": "tiny-llama", "task": "iso-dates", "max_steps": 1,
                  "output_dir": str(tmp_path / "run"), "progress": False})
    assert not (tmp_path / "run" / "log.jsonl").exists()  # no step was trained and thrown away
    assert (tmp_path / "run" / "adapter" / "notes.txt").read_text() == "mine"
