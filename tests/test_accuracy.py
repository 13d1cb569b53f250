"""CER must be exact: the benchmark's pass/fail thresholds (0.01 mean, 0.05 per page) rest on it."""

from __future__ import annotations

import random
import unicodedata

import pytest

from digitize.accuracy import cer, levenshtein, normalise_for_cer, page_cers


def naive_levenshtein(a: str, b: str) -> int:
    """Textbook full-matrix DP, the oracle for the vectorised version."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("kitten", "sitting", 3),
    ("", "abc", 3),
    ("abc", "", 3),
    ("flaw", "lawn", 2),
    ("Hòa", "Hóa", 1),  # one wrong tone is one wrong character
    ("đất", "dất", 1),  # đ is its own letter, not d + mark
    ("Nguyễn", "Nguyen", 1),
])
def test_levenshtein_known_distances(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance


def test_levenshtein_matches_naive_dp_on_random_vietnamese() -> None:
    rng = random.Random(7)
    alphabet = "aăâbcdđeêghiklmnoôơpqrstuưvxyàảãáạằẳẵắặầẩẫấậ "
    for _ in range(200):
        a = "".join(rng.choices(alphabet, k=rng.randint(0, 30)))
        b = "".join(rng.choices(alphabet, k=rng.randint(0, 30)))
        assert levenshtein(a, b) == naive_levenshtein(a, b), (a, b)


def test_long_page_counts_every_planted_error() -> None:
    rng = random.Random(3)
    reference = "".join(rng.choices("abcdefghijklmnopqrstuvwxyzđươ", k=3000))
    positions = sorted(rng.sample(range(3000), 30))
    hypothesis = list(reference)
    for p in positions:
        hypothesis[p] = "#"
    assert levenshtein(reference, "".join(hypothesis)) == 30
    assert cer(reference, "".join(hypothesis)) == pytest.approx(0.01)


def test_whitespace_layout_is_not_an_error() -> None:
    reference = "Mã hồ sơ: 000.00.31.H56-241015-0027\nngày 15 tháng 10 năm 2024\n"
    hypothesis = "  Mã hồ sơ:   000.00.31.H56-241015-0027 ngày 15\ttháng 10 năm 2024\f"
    assert cer(reference, hypothesis) == 0.0


def test_decomposed_unicode_equals_precomposed() -> None:
    precomposed = "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"
    decomposed = unicodedata.normalize("NFD", precomposed)
    assert decomposed != precomposed
    assert cer(precomposed, decomposed) == 0.0


def test_cer_is_relative_to_reference_length() -> None:
    assert cer("abcd", "abXd") == 0.25
    assert cer("abcd", "abcdXXXXXXXX") == 2.0  # garbage from noise can exceed 1


def test_empty_reference() -> None:
    assert cer("", "") == 0.0
    assert cer(" \n", "\f") == 0.0
    assert cer("", "x") == 1.0


def test_normalise_for_cer() -> None:
    assert normalise_for_cer(" a\n\n b\t\fc ") == "a b c"
    assert normalise_for_cer(unicodedata.normalize("NFD", "Đơn")) == "Đơn"


def test_page_cers_pairs_pages_and_ignores_trailing_form_feed() -> None:
    reference = "trang một\ftrang hai\n"
    assert page_cers(reference, "trang một\ftrang hai\f") == [0.0, 0.0]
    assert page_cers(reference, "trang một\f") == [0.0, 1.0]  # missing page counts as all wrong
    assert page_cers(reference, "trang mót\ftrang hai") == [pytest.approx(1 / 9), 0.0]
