"""Generate the bundled tasks' JSONL files, deterministically: `python -m rankwise.data.make_tasks`.

iso-dates: rewrite a date written in English ("Friday, March 5, 2021", "5th of March 2021", ...) as
ISO 8601 ("2021-03-05"). SmolLM2-135M-Instruct understands the request but rarely answers in exactly
that form zero-shot (it paraphrases, explains, or gets the month number wrong); a LoRA learns the rule
from a few hundred examples. The test split's calendar dates never occur in the train split, so a
tuned model must apply the rule, not recall answers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from pathlib import Path

PROMPT = "Convert the date to ISO format (YYYY-MM-DD). Reply with the date only.\nDate: {date}"

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


# Each style writes the same calendar date a different, common English way.
STYLES = {
    "month_day_year": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    "day_month_year": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "abbreviated": lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    "ordinal": lambda d: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    "weekday": lambda d: f"{d.strftime('%A')}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
}


def _random_dates(rng: random.Random, count: int, first_year: int = 1900,
                  last_year: int = 2099) -> list[dt.date]:
    """`count` distinct calendar dates, uniform over the years' days."""
    start = dt.date(first_year, 1, 1).toordinal()
    end = dt.date(last_year, 12, 31).toordinal()
    ordinals = rng.sample(range(start, end + 1), count)
    return [dt.date.fromordinal(o) for o in ordinals]


def iso_dates(n_train: int = 1000, n_test: int = 200, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, test) for the iso-dates task; every split's dates are distinct from the other's."""
    rng = random.Random(seed)
    dates = _random_dates(rng, n_train + n_test)
    styles = list(STYLES)

    def example(date: dt.date, i: int) -> dict:
        text = STYLES[styles[i % len(styles)]](date)  # round-robin: each style equally often
        return {"prompt": PROMPT.format(date=text), "answer": date.isoformat()}

    train = [example(d, i) for i, d in enumerate(dates[:n_train])]
    test = [example(d, i) for i, d in enumerate(dates[n_train:])]
    return train, test


TASKS = {"iso-dates": iso_dates}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tasks")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in TASKS.items():
        train, test = make()
        write_jsonl(args.out / f"{name}.train.jsonl", train)
        write_jsonl(args.out / f"{name}.test.jsonl", test)
        print(f"{name}: {len(train)} train, {len(test)} test -> {args.out}")


if __name__ == "__main__":
    main()
