"""Whether two normalised math answers are equal, as SkyThought's `math_equal` decides it.

The order of tests follows SkyThought (after Qwen2.5-Math): string equality, multiple-choice
letters, numbers with relative tolerance 1e-4 (a reference of 75 also accepts 0.75 and 7500:
percent forms), brackets ignored, tuples and intervals element by element, pmatrix entries,
equations as lhs - rhs, then symbolic equality through sympy. Deliberate differences:

- SkyThought tries sympy's `parse_latex` first, but its pinned antlr 4.7.2 (from latex2sympy2)
  makes that call always fail, so we skip it; LaTeX goes to `latex2sympy2_extended` (maintained,
  antlr 4.13) in place of the abandoned `latex2sympy2`, configured to read answers the same way;
- `parse_expr` evaluates Python, so text that could reach anything but arithmetic is refused;
- nothing here has a time limit: sympy can hang on hostile input, so callers run `math_equal`
  where they can stop it (skillmix/pipeline/scoring.py runs it in replaceable processes).
"""

from __future__ import annotations

import re
from math import isclose
from typing import Any

from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.math_normalization import NormalizationConfig
from sympy import Eq, N, Symbol, simplify
from sympy.parsing.sympy_parser import parse_expr

REL_TOL = 1e-4
CHOICES = ("A", "B", "C", "D", "E")
_NO_NORMALISATION = NormalizationConfig(
    basic_latex=False,
    units=False,
    malformed_operators=False,
    nits=False,
    boxed="none",
    equations=False,
)
_CONVERSION = ConversionConfig(
    interpret_as_mixed_fractions=False,
    interpret_simple_eq_as_assignment=False,
    interpret_contains_as_eq=False,
    lowercase_symbols=False,
)
# parse_expr runs eval(): only arithmetic may reach it (names like `open` or `__class__` never)
_UNSAFE = re.compile(
    r"__|[\"'`;@]|\b(lambda|import|exec|eval|open|compile|globals|locals|vars|getattr|setattr"
    r"|delattr|input|breakpoint|exit|quit|help|dir|type|object|memoryview|bytearray)\b"
)


def choice_answer_clean(pred: str) -> str:
    """The last standalone letter A-E of `pred`, or `pred` itself trimmed."""
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    letters = re.findall(r"\b(A|B|C|D|E)\b", pred.upper())
    last = letters[-1] if letters else pred.strip().strip(".")
    return last.rstrip(".").rstrip("/")


def parse_digits(text: str) -> float | None:
    """A number from `text` (commas ignored, "12%" and "12\\%" read as 0.12), or None."""
    text = str(text).replace(",", "")
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith("%"):
        text = text[:-1].removesuffix("\\")
        try:
            return float(text) / 100
        except ValueError:
            return None
    return None


def numeric_equal(prediction: float, reference: float) -> bool:
    """Equal within the relative tolerance SkyThought uses (1e-4)."""
    return isclose(reference, prediction, rel_tol=REL_TOL)


def _numbers_equal(prediction: float, reference: float, include_percentage: bool) -> bool:
    candidates = (
        [reference / 100, reference, reference * 100] if include_percentage else [reference]
    )
    return any(numeric_equal(prediction, c) for c in candidates)


def str_to_pmatrix(text: str) -> str:
    r"""{1,2},{3,4} -> \begin{pmatrix}1\2\end{pmatrix}, ... (SkyThought's spelling, kept)."""
    found = re.findall(r"\{.*,.*\}", text.strip())
    rows = [r"\begin{pmatrix}" + m.strip("{}").replace(",", "\\") + r"\end{pmatrix}" for m in found]
    return ", ".join(rows)


def _bracket_free_equal(prediction: str, reference: str) -> bool:
    """Equal once the outer [] or () and every brace and parenthesis are dropped."""
    pred, ref = prediction, reference
    if (pred.startswith("[") and pred.endswith("]") and not reference.startswith("(")) or (
        pred.startswith("(") and pred.endswith(")") and not reference.startswith("[")
    ):
        pred, ref = pred.strip("[]()"), ref.strip("[]()")
    for char in "{}()":
        pred, ref = pred.replace(char, ""), ref.replace(char, "")
    return pred.lower() == ref.lower()


def _tuples_equal(prediction: str, reference: str, include_percentage: bool) -> bool:
    """(a, b) vs [c, d]: equal element by element (the bracket kinds are not compared)."""
    shape = r"(\(|\[).+(\)|\])"
    if re.match(shape, prediction) is None or re.match(shape, reference) is None:
        return False
    preds, refs = prediction[1:-1].split(","), reference[1:-1].split(",")
    return len(preds) == len(refs) and all(
        math_equal(p, r, include_percentage) for p, r in zip(preds, refs, strict=True)
    )


_MATRIX_STARTS = ("\\begin{pmatrix}", "\\begin{bmatrix}")
_MATRIX_ENDS = ("\\end{pmatrix}", "\\end{bmatrix}")


def _matrix_rows(text: str) -> list[str]:
    inner = text[len("\\begin{pmatrix}") : -len("\\end{pmatrix}")]
    return [line.strip() for line in inner.split("\\\\") if line.strip()]


def _matrices_equal(prediction: str, reference: str, include_percentage: bool) -> bool:
    """Two pmatrix answers with the same shape and equal entries."""
    if not all(
        s.startswith(_MATRIX_STARTS) and s.endswith(_MATRIX_ENDS) for s in (prediction, reference)
    ):
        return False
    pred_rows, ref_rows = _matrix_rows(prediction), _matrix_rows(reference)
    if len(pred_rows) != len(ref_rows):
        return False
    for pred_row, ref_row in zip(pred_rows, ref_rows, strict=True):
        preds, refs = pred_row.split("&"), ref_row.split("&")
        if len(preds) != len(refs):
            return False
        if not all(math_equal(p, r, include_percentage) for p, r in zip(preds, refs, strict=True)):
            return False
    return True


def _equations_equal(prediction: str, reference: str, include_percentage: bool) -> bool:
    """y = 2x vs 2x - y = 0; x = 3 vs 3 (a short left side is a name for the value)."""
    if prediction.count("=") == 1 and reference.count("=") == 1:
        pl, pr = prediction.split("=")
        rl, rr = reference.split("=")
        pred, ref = f"{pl.strip()} - ({pr.strip()})", f"{rl.strip()} - ({rr.strip()})"
        return symbolic_equal(pred, ref) or symbolic_equal(f"-({pred})", ref)
    pred_name = prediction.count("=") == 1 and len(prediction.split("=")[0].strip()) <= 2
    if pred_name and "=" not in reference:
        return math_equal(prediction.split("=")[1], reference, include_percentage)
    ref_name = reference.count("=") == 1 and len(reference.split("=")[0].strip()) <= 2
    if ref_name and "=" not in prediction:
        return math_equal(prediction, reference.split("=")[1], include_percentage)
    return False


def math_equal(prediction: str, reference: str, include_percentage: bool = True) -> bool:
    """Whether the normalised answer `prediction` equals the normalised `reference`.

    May run for a long time on hostile input (sympy): bound it from outside."""
    if prediction.strip().lower() == reference.strip().lower():
        return True
    if reference in CHOICES and choice_answer_clean(prediction) == reference:
        return True
    pred_number, ref_number = parse_digits(prediction), parse_digits(reference)
    if pred_number is not None and ref_number is not None:
        return _numbers_equal(pred_number, ref_number, include_percentage)
    if not prediction:
        return False
    reference, prediction = reference.strip(), prediction.strip()
    if "pmatrix" in prediction and "pmatrix" not in reference:
        reference = str_to_pmatrix(reference)
    return (
        _bracket_free_equal(prediction, reference)
        or _tuples_equal(prediction, reference, include_percentage)
        or _matrices_equal(prediction, reference, include_percentage)
        or _equations_equal(prediction, reference, include_percentage)
        or symbolic_equal(prediction, reference)
    )


def _safe_parse_expr(text: str) -> Any:
    if _UNSAFE.search(text):
        raise ValueError("not arithmetic")
    return parse_expr(text)


def _parse(text: str) -> Any:
    """A sympy object for `text` (plain syntax first, then LaTeX), or `text` if neither reads it."""
    for parse in (_safe_parse_expr, _parse_latex):
        for variant in (text.replace("\\\\", "\\"), text):
            try:
                return parse(variant)
            except Exception:  # any parser failure means "try the next reading"
                continue
    return text


def _top_level_parts(text: str) -> list[str]:
    """`text` split at commas outside every bracket."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _parse_latex(text: str) -> Any:
    """LaTeX read as latex2sympy2 (SkyThought's parser) reads it: a top-level comma list is a
    list (not a set), 4\\frac{2}{3} is a product (not a mixed number), and `x = 5` is 5."""
    parts = _top_level_parts(text)
    if len(parts) > 1:
        return [_parse_latex(part) for part in parts]
    text = re.sub(r"(\d)\s*\\frac", r"\1*\\frac", text)
    result = latex2sympy(
        text, normalization_config=_NO_NORMALISATION, conversion_config=_CONVERSION
    )
    if isinstance(result, Eq):
        if not isinstance(result.lhs, Symbol):
            raise ValueError("an equation that is not an assignment")
        return result.rhs
    return result


def _try(check: Any) -> bool:
    """A sympy comparison that may raise on unrelated types: failure means "not equal"."""
    try:
        return bool(check())
    except Exception:
        return False


def symbolic_equal(a_text: str, b_text: str) -> bool:
    """Equal as sympy expressions: same text, a - b simplifies to 0, same equation, same
    numeric value (1e-4), or matrices equal to three decimals."""
    a, b = _parse(a_text), _parse(b_text)
    if _try(lambda: str(a) == str(b) or a == b):
        return True
    if _try(lambda: a.equals(b) or simplify(a - b) == 0):
        return True
    if _try(lambda: abs(a.lhs - a.rhs).equals(abs(b.lhs - b.rhs))):
        return True
    numeric = not isinstance(a, str) and not isinstance(b, str)
    if numeric and _try(lambda: numeric_equal(float(N(a)), float(N(b)))):
        return True
    return _try(
        lambda: (
            a.shape == b.shape
            and a.applyfunc(lambda x: round(x, 3)).equals(b.applyfunc(lambda x: round(x, 3)))
        )
    )
