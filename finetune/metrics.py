"""Scores: the unbiased pass@k estimator, BLEU / CodeBLEU / ROUGE-L of code against a reference,
and the point-biserial correlation of such a score with pass/fail."""

from __future__ import annotations

import io
import math
import re
import tokenize
from collections import Counter
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. 2021: 1 - C(n-c, k) / C(n, k), computed as a stable product.

    ``n`` samples of which ``c`` passed; the chance that at least one of ``k`` drawn (without
    replacement) passes. Needs ``1 <= k <= n``.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass@k averaged over tasks, each given as (n samples, c correct)."""
    if not counts:
        return 0.0
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


# -- token-level similarity ------------------------------------------------------------------------


def code_tokens(code: str) -> list[str]:
    """Python tokens (no comments, no layout tokens); a regex split when the code does not tokenize."""
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type not in skip]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return re.findall(r"\w+|[^\w\s]", code)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(candidate: str, reference: str, max_n: int = 4) -> float:
    """Sentence BLEU-4 on code tokens (uniform weights, brevity penalty, add-one smoothing for n>1)."""
    cand, ref = code_tokens(candidate), code_tokens(reference)
    if not cand or not ref:
        return 0.0
    log_sum = 0.0
    for n in range(1, max_n + 1):
        cand_grams, ref_grams = _ngrams(cand, n), _ngrams(ref, n)
        overlap = sum((cand_grams & ref_grams).values())
        total = max(sum(cand_grams.values()), 0)
        if n == 1:
            if overlap == 0:
                return 0.0
            log_sum += math.log(overlap / total)
        else:
            log_sum += math.log((overlap + 1) / (total + 1))
    brevity = 1.0 if len(cand) > len(ref) else math.exp(1 - len(ref) / len(cand))
    return brevity * math.exp(log_sum / max_n)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 on code tokens (longest common subsequence)."""
    cand, ref = code_tokens(candidate), code_tokens(reference)
    if not cand or not ref:
        return 0.0
    previous = [0] * (len(ref) + 1)
    for token in cand:
        current = [0]
        for j, other in enumerate(ref, 1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def codebleu(candidate: str, reference: str) -> float | None:
    """CodeBLEU (Ren et al. 2020, the ``codebleu`` package with tree-sitter); None when unavailable."""
    try:
        from codebleu import calc_codebleu
    except ImportError:
        return None
    try:
        return float(calc_codebleu([reference], [candidate], lang="python")["codebleu"])
    except (TypeError, ValueError, ZeroDivisionError, AttributeError):
        return None  # tree-sitter binding mismatch or an empty candidate


def point_biserial(scores: Sequence[float], passed: Sequence[bool]) -> float | None:
    """Correlation of a continuous score with a binary outcome; None when either is constant."""
    if len(scores) != len(passed):
        raise ValueError("scores and passed must have the same length")
    ones = [s for s, p in zip(scores, passed, strict=True) if p]
    zeros = [s for s, p in zip(scores, passed, strict=True) if not p]
    n = len(scores)
    if not ones or not zeros:
        return None
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / n)
    if std == 0:
        return None
    m1, m0 = sum(ones) / len(ones), sum(zeros) / len(zeros)
    return (m1 - m0) / std * math.sqrt(len(ones) * len(zeros) / n**2)
