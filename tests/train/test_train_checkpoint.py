"""Checkpoints: safetensors + JSON round trip, atomic commit, damage detection, failure mid-save."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import rankwise.io.atomic as atomic
from rankwise.errors import AdapterFileError
from rankwise.train import list_checkpoints, read_checkpoint, resolve_resume, train, verify_checkpoint
from rankwise.train.checkpoint import flatten_optimizer, unflatten_optimizer

from .train_helpers import adapted_tiny_llama, adapter_tensors, synthetic_features, tiny_config

FEATURES = synthetic_features(n=10)


def run(output_dir, resume=False, **overrides):
    config = tiny_config(output_dir, max_steps=4, save_every=2, **overrides)
    model = adapted_tiny_llama(config)
    train(model, FEATURES, config, pad_token_id=0,
          resume_from=resolve_resume("latest", output_dir) if resume else None)
    return model


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW([{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 0.01}])
    for _ in range(2):
        sum(p.pow(2).sum() for p in params).backward()
        opt.step()
    tensors, rest = flatten_optimizer(opt.state_dict())
    save_file(tensors, tmp_path / "o.safetensors")
    (tmp_path / "o.json").write_text(json.dumps(rest))
    rest = json.loads((tmp_path / "o.json").read_text())
    restored = unflatten_optimizer(load_file(tmp_path / "o.safetensors"), rest)
    fresh = torch.optim.AdamW([{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 0.01}])
    fresh.load_state_dict(restored)
    for i in (0, 1):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(fresh.state_dict()["state"][i][key], opt.state_dict()["state"][i][key])
    assert [g["lr"] for g in fresh.param_groups] == [0.1, 0.01]


def test_checkpoint_holds_everything_needed_and_no_pickle(tmp_path):
    model = run(tmp_path)
    latest = list_checkpoints(tmp_path)[-1]
    files = sorted(str(p.relative_to(latest)) for p in latest.rglob("*") if p.is_file())
    assert files == ["adapter/adapter.json", "adapter/adapter.safetensors", "manifest.json",
                     "optimizer.safetensors", "rng.safetensors", "trainer_state.json"]
    state = read_checkpoint(latest)
    assert state["step"] == 4 and state["micro_batches"] == 8
    assert state["scheduler"]["last_epoch"] == 4
    assert set(state["rng_tensors"]) == {"rank0.torch"} and len(state["rng"]) == 1
    final = adapter_tensors(model)
    assert all(torch.equal(state["weights"]["adapter/adapter.safetensors"][k], final[k]) for k in final)
    manifest = json.loads((latest / "manifest.json").read_text())
    assert set(manifest["files"]) == set(files) - {"manifest.json"}


def test_failure_mid_checkpoint_keeps_the_previous_one_and_resume_uses_it(tmp_path, monkeypatch):
    reference = run(tmp_path / "ref")
    real_save = atomic.save_tensors

    def failing_save(path, tensors, metadata=None):
        if "step-000004" in str(path) and path.name == "rng.safetensors":
            raise OSError(28, "No space left on device")
        real_save(path, tensors, metadata)

    with monkeypatch.context() as patch:
        patch.setattr(atomic, "save_tensors", failing_save)
        with pytest.raises(OSError, match="No space left"):
            run(tmp_path / "cut", save_total_limit=1)

    root = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-000002"]  # no partial folder, no temporaries
    verify_checkpoint(root / "step-000002")
    assert resolve_resume("latest", tmp_path / "cut") == root / "step-000002"
    resumed = run(tmp_path / "cut", resume=True, save_total_limit=1)
    ref, res = adapter_tensors(reference), adapter_tensors(resumed)
    assert all(torch.equal(ref[k], res[k]) for k in ref)
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step-000004"]


def test_damaged_checkpoint_is_detected_and_latest_falls_back(tmp_path):
    run(tmp_path)
    older, newer = list_checkpoints(tmp_path)
    data = (newer / "optimizer.safetensors").read_bytes()
    (newer / "optimizer.safetensors").write_bytes(data[:-8])
    with pytest.raises(AdapterFileError, match="differs from what the manifest recorded"):
        verify_checkpoint(newer)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        assert resolve_resume("latest", tmp_path) == older
    with pytest.raises(AdapterFileError, match="damaged"):
        resolve_resume(str(newer), tmp_path)


def test_folder_without_manifest_is_never_loaded(tmp_path):
    run(tmp_path)
    older, newer = list_checkpoints(tmp_path)
    (newer / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="incomplete checkpoint"):
        assert resolve_resume("latest", tmp_path) == older
    with pytest.raises(AdapterFileError, match="no manifest.json"):
        resolve_resume(str(newer), tmp_path)
    with pytest.raises(AdapterFileError, match="no such checkpoint folder"):
        resolve_resume(str(tmp_path / "nowhere"), tmp_path)


# Found by fuzzing (fuzz/): each was a raw KeyError, TypeError or OSError, or a multi-line message.
@pytest.mark.parametrize("edit", [
    lambda m: m["files"]["trainer_state.json"].pop("bytes"),
    lambda m: m["files"].__setitem__("trainer_state.json", [1, 2]),
    lambda m: m["files"].__setitem__("a\nb", {"bytes": 1, "sha256": "x"}),
    lambda m: m["files"].__setitem__("x" * 300, {"bytes": 1, "sha256": "x"}),
    lambda m: m["files"].__setitem__("../escape", {"bytes": 1, "sha256": "x"}),
    lambda m: m["files"].pop("rng.safetensors"),
])
def test_a_malformed_manifest_is_one_named_error(tmp_path, edit):
    import json

    run(tmp_path)
    checkpoint = list_checkpoints(tmp_path)[-1]
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    edit(manifest)
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterFileError) as info:
        verify_checkpoint(checkpoint)
    assert "\n" not in str(info.value)


def test_a_checksum_valid_state_of_the_wrong_shape_is_one_named_error(tmp_path):
    import json

    from rankwise.io.readers import sha256_file

    run(tmp_path)
    checkpoint = list_checkpoints(tmp_path)[-1]
    (checkpoint / "trainer_state.json").write_text("{}")
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    digest = sha256_file(checkpoint / "trainer_state.json")
    manifest["files"]["trainer_state.json"] = {"bytes": 2, "sha256": digest}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterFileError, match="not a rankwise checkpoint's state"):
        read_checkpoint(checkpoint)
