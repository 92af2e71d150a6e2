"""The error-path contract: every subcommand, given bad arguments, exits non-zero with one line on stderr
and no traceback, before it loads any weights where the mistake is visible in the arguments."""

from __future__ import annotations

import json

from rankwise.cli.main import main

TINY = ["model=tiny-llama", "task=iso-dates", "progress=false"]


def _cases(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n")
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"model": "caf\xe9"}')
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return [
        [], ["bogus"], ["--bogus"],
        ["finetune", *TINY, "bogus_key=1", "--dry-run"],
        ["finetune", *TINY, "method=nope", "--dry-run"],
        ["finetune", *TINY, "rank=0", "--dry-run"],
        ["finetune", *TINY, "targets=[", "--dry-run"],
        ["finetune", *TINY, "targets=q_proj[", "--dry-run"],
        ["finetune", *TINY, "seed=-1", "--dry-run"],
        ["finetune", *TINY, f"seed={2**70}", "--dry-run"],
        ["finetune", *TINY, "learning_rate=Infinity", "--dry-run"],
        ["finetune", *TINY, "method=pissa", "method_config.svd_iters=abc", "--dry-run"],
        ["finetune", *TINY, "method=pissa", "method_config.svd_iters=-3", "--dry-run"],
        ["finetune", *TINY, "method=full", "rank=4", "--dry-run"],
        ["finetune", *TINY, "rank_pattern.q_proj=0", "--dry-run"],
        ["finetune", *TINY, "optimizer=adafactorz", "--dry-run"],
        ["finetune", *TINY, "optimizer_config.momentum=0.9", "--dry-run"],
        ["finetune", "model=minilm-l6", "task=iso-dates", "--dry-run"],
        ["finetune", "--config", str(tmp_path / "missing.json")],
        ["finetune", "--config", str(latin1)],
        ["finetune", *TINY, f"output_dir={a_file}", "--dry-run"],
        ["finetune", *TINY, f"output_dir={a_file}/under", "--dry-run"],
        ["finetune", *TINY, "output_dir=/proc/rankwise-run"],
        ["finetune", "model=tiny-llama", f"data={data}", "eval_split=0.99", f"output_dir={tmp_path / 'r'}"],
        ["finetune", "max_steps"],
        ["eval", "--model", "tiny-llama", "--task", "nope"],
        ["eval", "--model", "tiny-llama", "--task", "iso-dates", "--batch-size", "0"],
        ["eval", "--model", "tiny-llama", "--task", "iso-dates", "--max-new-tokens", "0"],
        ["eval", "--model", "tiny-llama", "--task", "iso-dates", "--limit", "0"],
        ["eval", "--model", "tiny-llama", "--task", "iso-dates", "--predictions", str(tmp_path)],
        ["eval", "--model", "tiny-llama", "--task", "iso-dates", "--adapter", str(tmp_path / "none")],
        ["eval", "--model", "minilm-l6", "--task", "iso-dates"],
        ["eval", "--model", "nope", "--task", "iso-dates"],
        ["eval", "--model", "tiny-llama"],
        ["generate", "--model", "minilm-l6", "hi"],
        ["generate", "--model", "tiny-llama", " "],
        ["generate", "--model", "tiny-llama", "hi", "--max-new-tokens", "0"],
        ["methods", "--bogus"],
        ["analyze", "no-such-model"],
        ["analyze", "tiny-llama", "--compare", str(tmp_path / "missing")],
        ["analyze", "tiny-llama", "--out", f"{a_file}/report"],
        ["analyze", "minilm-l6", "--gradients", str(data)],
        ["analyze", "tiny-llama", "--k", "x"],
        ["compress", "tiny-llama", "--method", "nope"],
        ["compress", "tiny-llama", "--method", "svd", "--ratio", "1.5"],
        ["compress", "tiny-llama", "--method", "eora", "--bits", "5", "--rank", "4"],
        ["compress", "tiny-llama", "--method", "svd", "--rank", "4", "--bits", "3"],
        ["compress", "tiny-llama", "--method", "svd", "--rank", "4", "--set", "svd_iters"],
        ["compress", "tiny-llama", "--method", "svd", "--rank", "4", "--seq-len", "0"],
        ["compress", "tiny-llama", "--method", "svd", "--rank", "4", "--calib", str(tmp_path / "none.txt")],
        ["compress", "tiny-llama", "--method", "svd", "--rank", "4", "--out", str(a_file)],
        ["compress", str(tmp_path), "--method", "svd", "--rank", "4"],
        ["compress", "tiny-llama", "--method", "svd", "--rank", "4", "--task", "nope"],
    ]


def test_every_bad_command_line_is_one_line_and_no_traceback(tmp_path, capsys, cache):
    for argv in _cases(tmp_path):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own exit
            code = exit_.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code not in (0, None), argv
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)
        assert "error" in lines[0], (argv, err)
