"""Generators of the bundled multi-task suite beyond iso-dates (make_tasks.TASKS runs them all).

Each task asks for one short, exactly formatted answer, so exact match scores it. The design intent:
SmolLM2-135M-Instruct already has each skill, but zero-shot it answers in its own chatty form ("2.5
hours is equal to 150 minutes.") and so scores low; a rank-8 LoRA only has to learn the exact output
format (and, for mental-math and reverse-words, to apply the skill reliably), which a few hundred
examples teach. The base and tuned scores are measured by the merge benchmark, not assumed here.

- unit-conversion: "Measurement: 2.5 hours in minutes" -> "150". 14 exact unit pairs (metric length,
  mass and volume; time; feet/inches, yards/feet, pounds/ounces), both directions. Answers are bare
  numbers, an integer or one decimal place, computed in integer tenths so they are exact.
- reverse-words: "Words: green river under old bridge" -> "bridge old under river green". 3-5 distinct
  common words; the model knows every word and how to copy, and must learn to copy them in reverse.
- mental-math: "Problem: 47 + 38" -> "85". Sums and differences (never negative) of two-digit
  numbers, and two-digit times one-digit products: the easy end of arithmetic a 135M model can do.
- spell-numbers: "Number: 342" -> "three hundred forty-two". 0-9999 in US style: lowercase, hyphens
  for 21-99, no "and", no commas.
- name-format: "Name: Ada B. Lovelace" -> "Lovelace, Ada B.". A third of the names have a middle
  initial, which stays after the first name.

Each task draws distinct inputs from its own random.Random(seed) until it has n_train + n_test of
them; the first n_train are train and the rest test, so no test input ever occurs in train.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable

Rows = tuple[list[dict], list[dict]]


def _distinct_inputs(draw: Callable[[random.Random, int], Hashable], n_train: int, n_test: int,
                     seed: int) -> tuple[list, list]:
    """(train, test) inputs: draw(rng, i) repeated until n_train + n_test distinct ones, first drawn first."""
    rng = random.Random(seed)
    found: dict = {}  # a dict keeps the order in which inputs were first drawn
    while len(found) < n_train + n_test:
        found.setdefault(draw(rng, len(found)), None)
    items = list(found)
    return items[:n_train], items[n_train:]


def _rows(prompt: str, pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"prompt": prompt.format(x=x), "answer": answer} for x, answer in pairs]


UNIT_PROMPT = "Convert the measurement to the unit asked for. Reply with the number only.\nMeasurement: {x}"
# (larger unit, smaller unit, smaller units in one larger); every factor is exact by definition.
CONVERSIONS = [("km", "m", 1000), ("m", "cm", 100), ("m", "mm", 1000), ("cm", "mm", 10),
               ("kg", "g", 1000), ("g", "mg", 1000), ("L", "mL", 1000), ("hour", "minute", 60),
               ("minute", "second", 60), ("day", "hour", 24), ("week", "day", 7), ("foot", "inch", 12),
               ("yard", "foot", 3), ("pound", "ounce", 16)]
PLURALS = {"hour": "hours", "minute": "minutes", "second": "seconds", "day": "days", "week": "weeks",
           "foot": "feet", "inch": "inches", "yard": "yards", "pound": "pounds", "ounce": "ounces"}


def _tenths(value: int) -> str:
    """A number given in tenths as written: 35 -> "3.5", 30 -> "3"."""
    whole, tenth = divmod(value, 10)
    return str(whole) if tenth == 0 else f"{whole}.{tenth}"


def _measure(tenths: int, unit: str) -> str:
    return f"{_tenths(tenths)} {unit if tenths == 10 else PLURALS.get(unit, unit)}"


def unit_conversion(n_train: int = 1000, n_test: int = 200, seed: int = 0) -> Rows:
    def draw(rng: random.Random, i: int) -> tuple[int, bool, int]:
        # Half whole numbers 1-100, half one-decimal numbers 0.1-19.9 of the larger unit.
        tenths = 10 * rng.randint(1, 100) if rng.random() < 0.5 else rng.choice(
            [t for t in range(1, 200) if t % 10])
        return i % len(CONVERSIONS), rng.random() < 0.5, tenths

    def pair(item: tuple[int, bool, int]) -> tuple[str, str]:
        large, small, factor = CONVERSIONS[item[0]]
        large_tenths, small_tenths = item[2], item[2] * factor
        if item[1]:  # larger unit -> smaller unit
            return f"{_measure(large_tenths, large)} in {PLURALS.get(small, small)}", _tenths(small_tenths)
        return f"{_measure(small_tenths, small)} in {PLURALS.get(large, large)}", _tenths(large_tenths)

    return tuple(_rows(UNIT_PROMPT, [pair(x) for x in split])
                 for split in _distinct_inputs(draw, n_train, n_test, seed))


REVERSE_PROMPT = "Reverse the order of the words. Reply with the reversed words only.\nWords: {x}"
WORDS = """apple river green house table chair window garden yellow bright quiet happy music paper
stone water cloud light dark small large warm cold blue red black white sweet fresh early late fast slow
dog cat bird fish horse tree flower grass hill road bridge city town market school book letter story
song dance game ball coffee bread cheese milk honey lemon orange sugar salt rain snow wind storm sun moon
star night morning summer winter spring autumn ocean island forest mountain valley field farm door
wall floor roof kitchen under over near behind little old new open round soft loud kind proud
calm gold silver glass wood iron paint color ship train plane car bike walk run jump sing read write
play watch listen think dream smile""".split()


def reverse_words(n_train: int = 1000, n_test: int = 200, seed: int = 0) -> Rows:
    def draw(rng: random.Random, i: int) -> tuple[str, ...]:
        return tuple(rng.sample(WORDS, 3 + i % 3))  # 3, 4 and 5 words equally often

    return tuple(_rows(REVERSE_PROMPT, [(" ".join(w), " ".join(reversed(w))) for w in split])
                 for split in _distinct_inputs(draw, n_train, n_test, seed))


MATH_PROMPT = "Work out the result. Reply with the number only.\nProblem: {x}"


def mental_math(n_train: int = 1000, n_test: int = 200, seed: int = 0) -> Rows:
    def draw(rng: random.Random, i: int) -> tuple[int, str, int]:
        op = "+-*"[i % 3]
        a = rng.randint(10, 99)
        b = rng.randint(2, 9) if op == "*" else rng.randint(10, a if op == "-" else 99)
        return a, op, b

    def value(a: int, op: str, b: int) -> int:
        return a + b if op == "+" else a - b if op == "-" else a * b

    return tuple(_rows(MATH_PROMPT, [(f"{a} {op} {b}", str(value(a, op, b))) for a, op, b in split])
                 for split in _distinct_inputs(draw, n_train, n_test, seed))


SPELL_PROMPT = "Write the number in English words. Reply with the words only.\nNumber: {x}"
ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spell_number(n: int) -> str:
    """0 <= n < 1,000,000 in US English words: 342 -> "three hundred forty-two", 1005 -> "one thousand five"
    (lowercase, hyphens for 21-99, no "and", no commas)."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"spell_number takes 0 <= n < 1000000, got {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    for size, name in ((1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{spell_number(head)} {name}" + ("" if rest == 0 else " " + spell_number(rest))
    raise AssertionError("unreachable")


def spell_numbers(n_train: int = 1000, n_test: int = 200, seed: int = 0) -> Rows:
    def draw(rng: random.Random, i: int) -> int:
        # Weighted, not round-robin: 0-99 holds only 100 numbers, fewer than an equal share.
        low, high = rng.choices([(0, 99), (100, 999), (1000, 9999)], weights=[1, 4, 5])[0]
        return rng.randint(low, high)

    return tuple(_rows(SPELL_PROMPT, [(str(n), spell_number(n)) for n in split])
                 for split in _distinct_inputs(draw, n_train, n_test, seed))


NAME_PROMPT = 'Rewrite the name as "Last, First". Reply with the name only.\nName: {x}'
FIRST_NAMES = """Ada Alan Grace Marie Isaac Rosalind Charles Emmy Niels Lise Albert Dorothy Richard Barbara
John Katherine Claude Hedy Linus Mary Edsger Frances Tim Margaret Donald Sophie Carl Rachel Thomas Jane
Henry Alice George Emma James Olivia David Laura Peter Helen Daniel Sarah Michael Anna Robert Clara
William Julia Samuel Nora""".split()
LAST_NAMES = """Lovelace Turing Hopper Curie Newton Franklin Babbage Noether Bohr Meitner Einstein Hodgkin
Feynman Liskov McCarthy Johnson Shannon Lamarr Pauling Somerville Dijkstra Allen Kay Hamilton Knuth
Germain Sagan Carson Edison Goodall Ford Walker Miller Brown Wilson Taylor Moore Clark Lewis Young King
Wright Scott Green Baker Adams Nelson Carter Mitchell Roberts""".split()


def name_format(n_train: int = 1000, n_test: int = 200, seed: int = 0) -> Rows:
    def draw(rng: random.Random, i: int) -> tuple[str, str, str]:
        middle = rng.choice("ABCDEFGHJKLMNPRSTW") + "." if i % 3 == 2 else ""  # a third have an initial
        return rng.choice(FIRST_NAMES), middle, rng.choice(LAST_NAMES)

    def pair(first: str, middle: str, last: str) -> tuple[str, str]:
        given = f"{first} {middle}" if middle else first
        return f"{given} {last}", f"{last}, {given}"

    return tuple(_rows(NAME_PROMPT, [pair(*name) for name in split])
                 for split in _distinct_inputs(draw, n_train, n_test, seed))


MORE_TASKS = {"unit-conversion": unit_conversion, "reverse-words": reverse_words, "mental-math": mental_math,
              "spell-numbers": spell_numbers, "name-format": name_format}
