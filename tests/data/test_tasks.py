"""The bundled tasks: present, well-formed, regenerable, and with a truly held-out test split."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from rankwise.data import bundled_task, list_tasks, make_tasks
from rankwise.data.tasks import tasks_folder
from rankwise.errors import ConfigError


def test_iso_dates_is_listed_and_loads():
    assert "iso-dates" in list_tasks()
    train, test = bundled_task("iso-dates")
    assert (len(train), len(test)) == (1000, 200)
    for row in train + test:
        dt.date.fromisoformat(row["answer"])  # every answer is a valid ISO date
        assert row["answer"][:4] in row["prompt"]  # the year is copied from the prompt


def test_test_dates_never_occur_in_training():
    train, test = bundled_task()
    assert not {r["answer"] for r in train} & {r["answer"] for r in test}


def test_shipped_files_are_what_the_generator_makes():
    train, test = make_tasks.iso_dates()
    folder = tasks_folder()
    for split, rows in (("train", train), ("test", test)):
        lines = (folder / f"iso-dates.{split}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows


def test_every_style_appears_in_both_splits():
    train, test = bundled_task()
    for split in (train, test):
        assert any("the " in r["prompt"] and " of " in r["prompt"] for r in split)
        assert any("day, " in r["prompt"] for r in split)  # weekday style


def test_unknown_task():
    with pytest.raises(ConfigError, match="iso-dates"):
        bundled_task("nope")
