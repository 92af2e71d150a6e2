"""A per-session RANKWISE_CACHE holding SmolLM2's tokenizer, so tiny-llama loads in milliseconds."""

from __future__ import annotations

import pytest

from rankwise.models import embedded, gguf


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("rankwise-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RANKWISE_CACHE", str(root))
        gguf.ensure_tokenizer(embedded.package_file("smollm2-135m"))  # ~5 s once, then cached
    return root


@pytest.fixture
def cache(session_cache, monkeypatch):
    monkeypatch.setenv("RANKWISE_CACHE", str(session_cache))
    return session_cache
