"""Cleaning, document keys, the split rule and exact deduplication."""

import unicodedata

import numpy as np
import pytest

from muse_jax.data.cleaning import SeenKeys, clean_document, document_key, validation_threshold


def test_clean_document_strips_controls_and_normalises():
    raw = "  ＡＢＣ　ﾃｽﾄ\r\n二行目\x00\x1b[0m\t表\x7f\u0085 \n"
    assert clean_document(raw, nfkc=True) == "ABC テスト\n二行目[0m\t表"
    assert clean_document(raw, nfkc=False) == "ＡＢＣ　ﾃｽﾄ\n二行目[0m\t表"
    text = "すでに正規化された文。\n二行目。"
    assert clean_document(text, True) == text
    mixed = "普通の行\n①全角１２３\nｶﾀｶﾅ"
    assert clean_document(mixed, True) == unicodedata.normalize("NFKC", mixed)
    assert clean_document(" \r\n\x00 ", True) == ""


def test_document_key_and_split_threshold():
    assert document_key("同じ文書") == document_key("同じ文書") != document_key("違う文書")
    assert 0 <= document_key("x") < 2**64
    assert validation_threshold(0.0) == 0 and validation_threshold(0.5) == 2**63
    keys = [document_key(f"文書{i}") for i in range(4000)]
    share = np.mean([k < validation_threshold(0.1) for k in keys])
    assert 0.08 < share < 0.12
    with pytest.raises(ValueError, match="val_fraction"):
        validation_threshold(1.0)


def test_seen_keys_matches_a_python_set():
    rng = np.random.default_rng(0)
    seen, reference = SeenKeys(), set()
    for size in rng.integers(0, 300, size=60):
        keys = rng.integers(0, 2000, size=size, dtype=np.uint64)  # many repeats, within and across calls
        expected = []
        for k in keys.tolist():
            expected.append(k not in reference)
            reference.add(k)
        np.testing.assert_array_equal(seen.first_seen(keys), expected)
    assert len(seen) == len(reference)
    assert len(seen._runs) <= 2 + int(np.log2(len(reference)))  # a few sorted runs, not one per call
    big = np.array([2**64 - 1, 0, 2**63], dtype=np.uint64)
    assert seen.first_seen(big).tolist() == [True, 0 not in reference, True]
