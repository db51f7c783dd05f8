"""Final-answer extraction and normalisation for math tasks, as SkyThought's scorer does it.

SkyThought (after Qwen2.5-Math) scores a response by extracting its final answer, normalising
both it and the reference with the same string rules, and asking `math_equal` (see
`math_equality.py`). Verdicts must agree with its published numbers, so the rules below follow
its algorithm closely, quirks included (each kept quirk says so). Deliberate differences:

- number words are read by our own port of `word2number` (no dependency on an abandoned package);
- the dead `{x}`/`(x)`/`[x]` unwrapping (its `isalnum()` test can never pass) is left out;
- the symbolic check is pure and unbounded here: callers bound it (pipeline/scoring.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from skillmix.method.math_equality import math_equal

_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
    "thousand": 1000,
    "million": 1000000,
    "billion": 1000000000,
}
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SCALES = ("billion", "million", "thousand")


def _group(words: list[str]) -> int:
    """A number below a thousand from its words (word2number's `number_formation`)."""
    values = [_UNITS[w] for w in words]  # IndexError/KeyError mean "not a number", as upstream
    if len(values) == 4:
        return values[0] * values[1] + values[2] + values[3]
    if len(values) == 3:
        return values[0] * values[1] + values[2]
    if len(values) == 2:
        return values[0] * values[1] if 100 in values else values[0] + values[1]
    return values[0]


def _scaled_sum(words: list[str]) -> int:
    """The integer part: billions, millions, thousands and the rest, as word2number adds them."""
    if len(words) == 1:
        return _UNITS[words[0]]
    where = {s: (words.index(s) if s in words else -1) for s in _SCALES}
    b, m, t = where["billion"], where["million"], where["thousand"]
    if (t > -1 and (t < m or t < b)) or (m > -1 and m < b):
        raise ValueError("malformed number")
    total = 0
    if b > -1:
        total += _group(words[0:b]) * 1000000000
    if m > -1:
        total += _group(words[b + 1 : m] if b > -1 else words[0:m]) * 1000000
    if t > -1:
        start = m + 1 if m > -1 else (b + 1 if b > -1 else 0)
        total += _group(words[start:t]) * 1000
    if max(b, m, t) == -1:
        return total + _group(words)
    # upstream adds what follows the first scale, in thousand, million, billion order, that is
    # not the last word ("two million three thousand" adds 1003 more: a kept quirk)
    first = next((i for i in (t, m, b) if i > -1 and i != len(words) - 1), None)
    return total + (_group(words[first + 1 :]) if first is not None else 0)


def words_to_number(text: str) -> int | float:
    """word2number's `word_to_num`: the number the number words in `text` spell.

    Like upstream it ignores every other word ("two apples" is 2) and reads a plain digit string
    as an int ("007" is 7); it raises ValueError where upstream does."""
    text = text.replace("-", " ").lower()
    if text.isdigit():
        return int(text)
    words = [w for w in text.strip().split() if w in _UNITS or w == "point"]
    if not words:
        raise ValueError("no number words")
    if any(words.count(w) > 1 for w in (*_SCALES, "point")):
        raise ValueError("redundant number word")
    decimals: list[str] = []
    if "point" in words:
        at = words.index("point")
        words, decimals = words[:at], words[at + 1 :]
    total: int | float = _scaled_sum(words) if words else 0
    if decimals and all(w in _DIGIT_WORDS for w in decimals):
        total += float("0." + "".join(str(_UNITS[w]) for w in decimals))
    return total


def convert_word_number(text: str) -> str:
    """`text` with number words as digits, or unchanged when it spells no number."""
    try:
        return str(words_to_number(text))
    except (ValueError, KeyError, IndexError):
        return text


def _fix_fracs(string: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1{72} -> \frac{1}{72}."""
    pieces = string.split("\\frac")
    out = pieces[0]
    for piece in pieces[1:]:
        out += "\\frac"
        if piece.startswith("{"):
            out += piece
            continue
        if len(piece) < 2:
            return string
        a, b, rest = piece[0], piece[1], piece[2:]
        out += "{" + a + "}{" + b + "}" + rest if b != "{" else "{" + a + "}" + b + rest
    return out


def _fix_a_slash_b(string: str) -> str:
    r"""3/4 -> \frac{3}{4} when both sides are plain integers."""
    parts = string.split("/")
    if len(parts) != 2:
        return string
    a, b = parts
    try:
        left: int | str = a if "sqrt" in a else int(a)
        right: int | str = b if "sqrt" in b else int(b)
    except ValueError:
        return string
    if string != f"{left}/{right}":
        return string
    return "\\frac{" + str(left) + "}{" + str(right) + "}"


def _number_word_in_text(match: re.Match[str]) -> str:
    word = match.group(1).lower()
    converted = convert_word_number(word)
    return match.group(0) if converted == word else converted


def _strip_latex(string: str) -> str:
    """The first half of the normalisation: LaTeX spellings, units, degrees, dollars, words."""
    string = str(string).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    string = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", string)
    string = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", string)
    string = string.replace("bmatrix", "pmatrix")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("\\{", "{").replace("\\}", "}")
    string = re.sub(r"\\text\{([a-zA-Z]+)\}", _number_word_in_text, string)
    string = re.sub(r"(cm|inches)\}\^2", r"\1}", string)
    without_unit = re.sub(r"\\text\{.*?\}$", "", string).strip()
    if without_unit not in ("", string):
        string = without_unit
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "").replace("$", "")
    string = string.replace("\\(", "").replace("\\)", "")
    string = convert_word_number(string)
    string = re.sub(r"\\text\{(.*?)\}", r"\1", string)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        string = string.replace(key, "")
    string = string.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    return string.replace("\\%", "").replace("%", "")


def strip_answer_string(string: str) -> str:
    """SkyThought's `strip_answer_string`: one spelling for equal answers, before comparing."""
    string = _strip_latex(string)
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    string = string.replace("infinity", "\\infty")
    if "\\infty" not in string:
        string = string.replace("inf", "\\infty")
    string = string.replace("+\\inity", "\\infty")
    # upstream removes "and" anywhere, even inside words and commands ("\\land" -> "\\l")
    string = string.replace("and", "").replace("\\mathbf", "")
    string = re.sub(r"\\mbox\{.*?\}", "", string)
    if "j" in string and "i" not in string:
        string = string.replace("j", "i")
    string = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", string)
    string = re.sub(r"(\d+)\.0*$", r"\1", string)
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    sides = string.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        string = sides[1]
    string = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", string).replace(" ", "")
    string = _fix_a_slash_b(_fix_fracs(string))
    string = re.sub(r"\\(?=\-?\d+(\\|\)|,|\]|$))", "", string)
    string = re.sub(r"thgrade$", "", string)
    if re.fullmatch(r"(\s*-?\d+\s*,)*\s*-?\d+\s*", string):
        string = ",".join(str(n) for n in sorted(int(x) for x in string.split(",")))
    return string


def _boxed_content(text: str) -> str:
    r"""What follows the last "boxed": the balanced {...}, or up to the next $ (\boxed 5$)."""
    tail = text.split("boxed")[-1]
    if not tail:
        return ""
    if tail[0] != "{":
        return tail.split("$")[0].strip()
    depth = 1
    out: list[str] = []
    for char in tail[1:]:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                break
        out.append(char)
    return "".join(out)


def _raw_answer(text: str, use_last_number: bool) -> str:
    """The answer span, by SkyThought's order of preference."""
    if "final answer is $" in text and "$. I hope" in text:  # Minerva's few-shot format
        return text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    if "boxed" in text:
        return _boxed_content(text)
    if "he answer is" in text:
        return text.split("he answer is")[-1].strip()
    if "final answer is" in text:
        return text.split("final answer is")[-1].strip()
    if "答案是" in text:
        return text.split("答案是")[1].strip().split("\n\n")[0].strip()
    if use_last_number:
        numbers = re.findall(r"-?\d*\.?\d+", text.replace(",", ""))
        return numbers[-1] if numbers else ""
    return ""


def extract_answer(text: str, use_last_number: bool = True) -> str:
    r"""The final answer of a chain of thought: the last \boxed{}, then "the answer is" or
    "final answer is", then the last number; normalised with `strip_answer_string`."""
    pred = _raw_answer(text.replace("\u043a\u0438", ""), use_last_number)
    pred = re.sub(r"\n\s*", "", pred)
    if pred.startswith(":"):
        pred = pred[1:]
    if pred.endswith("."):
        pred = pred[:-1]
    if pred.endswith("/"):
        pred = pred[:-1]
    return strip_answer_string(pred)


@dataclass(frozen=True)
class MathVerdict:
    """One response's verdict: `reason` is "" when correct (SkyThought writes the same)."""

    correct: bool
    reason: str
    extracted: str


INCORRECT = "Solution is incorrect."
NO_ANSWER = "No answer found."


def score_math(response: str, reference: str) -> MathVerdict:
    """SkyThought's MathTaskHandler.check_correctness, with the extracted answer kept."""
    answer = strip_answer_string(reference)
    pred = strip_answer_string(extract_answer(response))
    if math_equal(pred, answer):
        return MathVerdict(True, "", pred)
    return MathVerdict(False, INCORRECT if pred else NO_ANSWER, pred)
