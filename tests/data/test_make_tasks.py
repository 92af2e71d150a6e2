"""The generated multi-task suite: deterministic, held out, shipped as generated, and every answer right
by a check that does not reuse the generator's own code."""

from __future__ import annotations

import operator
import re
from fractions import Fraction

import pytest

from rankwise.data import bundled_task, list_tasks
from rankwise.data.make_more_tasks import spell_number
from rankwise.data.make_tasks import TASKS, write_jsonl
from rankwise.data.tasks import tasks_folder

NEW_TASKS = ["unit-conversion", "reverse-words", "mental-math", "spell-numbers", "name-format"]


def _field(prompt: str) -> str:
    """The input after "Field: " on the prompt's second line."""
    instruction, line = prompt.split("\n")
    assert instruction.endswith("only.")
    return line.split(": ", 1)[1]


@pytest.fixture(scope="module")
def generated() -> dict:
    return {name: make() for name, make in TASKS.items()}


def test_every_task_is_registered_and_listed():
    assert set(NEW_TASKS) < set(TASKS)
    assert set(TASKS) <= set(list_tasks())


@pytest.mark.parametrize("name", NEW_TASKS)
def test_generation_is_deterministic_and_sized(name, generated):
    assert TASKS[name]() == generated[name]
    train, test = generated[name]
    assert (len(train), len(test)) == (1000, 200)
    assert TASKS[name](n_train=50, n_test=10, seed=1) != TASKS[name](n_train=50, n_test=10, seed=2)


@pytest.mark.parametrize("name", NEW_TASKS)
def test_inputs_are_distinct_and_test_inputs_never_occur_in_train(name, generated):
    train, test = generated[name]
    train_inputs, test_inputs = {r["prompt"] for r in train}, {r["prompt"] for r in test}
    assert (len(train_inputs), len(test_inputs)) == (len(train), len(test))
    assert not train_inputs & test_inputs


@pytest.mark.parametrize("name", sorted(TASKS))
def test_shipped_files_are_byte_for_byte_what_the_generator_writes(name, generated, tmp_path):
    for split, rows in zip(("train", "test"), generated[name], strict=True):
        write_jsonl(tmp_path / "expected.jsonl", rows)
        shipped = (tasks_folder() / f"{name}.{split}.jsonl").read_bytes()
        assert shipped == (tmp_path / "expected.jsonl").read_bytes()
    assert bundled_task(name) == generated[name]


def test_mental_math_answers_evaluate(generated):
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    for split in generated["mental-math"]:
        for row in split:
            a, op, b = _field(row["prompt"]).split(" ")
            assert row["answer"] == str(ops[op](int(a), int(b)))
            assert int(row["answer"]) >= 0
        assert {_field(r["prompt"]).split(" ")[1] for r in split} == set(ops)


# Every unit in one base unit of its quantity (metre, gram, litre, second; inch and ounce for the
# imperial ones), written out independently of the generator's table of neighbouring-unit factors.
IN_BASE = {"km": 1000, "m": 1, "cm": Fraction(1, 100), "mm": Fraction(1, 1000), "kg": 1000, "g": 1,
           "mg": Fraction(1, 1000), "L": 1, "mL": Fraction(1, 1000), "week": 604800, "day": 86400,
           "hour": 3600, "minute": 60, "second": 1, "yard": 36, "foot": 12, "inch": 1, "pound": 16,
           "ounce": 1}
SINGULAR = {"weeks": "week", "days": "day", "hours": "hour", "minutes": "minute", "seconds": "second",
            "yards": "yard", "feet": "foot", "inches": "inch", "pounds": "pound", "ounces": "ounce"}


def test_unit_conversions_are_exact(generated):
    for split in generated["unit-conversion"]:
        pairs = set()
        for row in split:
            value, unit, word_in, target = _field(row["prompt"]).split(" ")
            assert word_in == "in"
            assert re.fullmatch(r"(0|[1-9]\d*)(\.[1-9])?", row["answer"])  # no trailing zeros, no "1.0"
            unit, target = SINGULAR.get(unit, unit), SINGULAR.get(target, target)
            assert Fraction(row["answer"]) == Fraction(value) * IN_BASE[unit] / IN_BASE[target]
            pairs.add(frozenset((unit, target)))
        assert len(pairs) == 14  # every unit pair appears in both splits


def test_reversed_words(generated):
    for split in generated["reverse-words"]:
        for row in split:
            words = _field(row["prompt"]).split(" ")
            assert row["answer"].split(" ") == words[::-1]
            assert len(set(words)) == len(words) and all(w.isalpha() and w.islower() for w in words)
        assert {len(r["answer"].split()) for r in split} == {3, 4, 5}


SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
DECADES = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def _words_to_number(text: str) -> int:
    """Read US English number words back (the inverse direction, so it shares no code with the generator)."""
    total, current = 0, 0
    for word in text.replace("-", " ").split(" "):
        if word in SMALL:
            current += SMALL.index(word)
        elif word in DECADES:
            current += 10 * (DECADES.index(word) + 2)
        elif word == "hundred":
            current *= 100
        elif word == "thousand":
            total, current = total + current * 1000, 0
        else:
            raise ValueError(word)
    return total + current


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (13, "thirteen"), (40, "forty"), (21, "twenty-one"), (101, "one hundred one"),
    (342, "three hundred forty-two"), (999, "nine hundred ninety-nine"), (1000, "one thousand"),
    (1005, "one thousand five"), (7010, "seven thousand ten"),
    (9999, "nine thousand nine hundred ninety-nine"),
    (120000, "one hundred twenty thousand"),
])
def test_spell_number_known_cases(n, words):
    assert spell_number(n) == words


def test_spell_number_range():
    with pytest.raises(ValueError, match="1000000"):
        spell_number(1_000_000)


def test_spelled_numbers_read_back(generated):
    for split in generated["spell-numbers"]:
        for row in split:
            assert _words_to_number(row["answer"]) == int(_field(row["prompt"]))
            assert re.fullmatch(r"[a-z]+([ -][a-z]+)*", row["answer"])
            assert "-" not in row["answer"] or re.search(r"(ty)-[a-z]+$", row["answer"])
        assert {len(_field(r["prompt"])) for r in split} >= {2, 3, 4}


def test_name_format(generated):
    for split in generated["name-format"]:
        with_initial = 0
        for row in split:
            *given, last = _field(row["prompt"]).split(" ")
            assert row["answer"] == f"{last}, {' '.join(given)}"
            with_initial += len(given) == 2 and bool(re.fullmatch(r"[A-Z]\.", given[1]))
        assert abs(with_initial / len(split) - 1 / 3) < 0.01
