"""The real data of the transformer demos: the shipped digits (checksum), splits, patches and
the character corpus."""
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitheory.transformer import data


def test_digits_file_matches_its_checksum_and_holds_the_uci_digits():
    assert data.sha256(data.DIGITS_FILE) == data.DIGITS_SHA256
    images, labels = data.load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    # UCI: 10 classes of 174-183 images each; the first image is a 0 (scikit-learn's digits[0])
    counts = np.bincount(labels)
    assert len(counts) == 10 and counts.min() >= 174 and counts.max() <= 183
    assert labels[0] == 0 and images[0, 0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]


def test_a_damaged_digits_file_is_refused(tmp_path):
    bad = tmp_path / "digits.csv.gz"
    shutil.copy(data.DIGITS_FILE, bad)
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256 .* expected " + data.DIGITS_SHA256):
        data.load_digits(bad)
    with pytest.raises(ValueError, match="damaged"):
        data.load_digits(data.DIGITS_FILE, expected_sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="missing"):
        data.load_digits(tmp_path / "nothing.csv.gz")


def test_split_is_seeded_disjoint_and_complete():
    a, b, c = data.digits_split(0), data.digits_split(0), data.digits_split(1)
    assert a["x_train"].shape == (1497, 8, 8) and a["x_test"].shape == (300, 8, 8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["y_test"], c["y_test"])
    # train + test is a permutation of the whole set (compare rows as sorted multisets)
    images, labels = data.load_digits()
    rows = np.concatenate([np.c_[a["x_train"].reshape(-1, 64) * 16, a["y_train"]],
                           np.c_[a["x_test"].reshape(-1, 64) * 16, a["y_test"]]])
    whole = np.c_[images.reshape(-1, 64), labels].astype(np.float64)
    np.testing.assert_array_equal(np.unique(rows, axis=0, return_counts=True)[1],
                                  np.unique(whole, axis=0, return_counts=True)[1])
    assert a["x_train"].max() == 1.0 and a["x_train"].min() == 0.0
    with pytest.raises(ValueError, match="n_test"):
        data.digits_split(0, n_test=1797)


@given(st.sampled_from([1, 2, 4, 8]), st.integers(1, 3), st.integers(0, 2**31))
def test_patchify_cuts_row_major_squares(patch, n, seed):
    images = np.random.default_rng(seed).standard_normal((n, 8, 8))
    out = data.patchify(images, patch)
    g = 8 // patch
    assert out.shape == (n, g * g, patch * patch)
    for i in range(g):
        for j in range(g):
            np.testing.assert_array_equal(
                out[:, i * g + j], images[:, i * patch:(i + 1) * patch,
                                          j * patch:(j + 1) * patch].reshape(n, -1))


@pytest.mark.parametrize("patch", [3, 5, 6, 7])
def test_patch_that_does_not_divide_8_is_refused(patch):
    with pytest.raises(ValueError, match=r"patch must divide 8 \(1, 2, 4 or 8\), got"):
        data.patchify(np.zeros((1, 8, 8)), patch)
    for bad in (0, 16):
        with pytest.raises(ValueError, match="patch must be in"):
            data.patchify(np.zeros((1, 8, 8)), bad)
    with pytest.raises(ValueError, match="images must have shape"):
        data.patchify(np.zeros((1, 7, 8)), 2)


def test_pydoc_corpus_is_deterministic_and_decodes_back():
    text = data.pydoc_text()
    a, b = data.char_corpus(), data.char_corpus(text)
    assert a.sha256 == b.sha256 and np.array_equal(a.train, b.train)
    assert len(text) > 100_000 and a.n_chars == len(text)
    assert a.vocab == "".join(sorted(set(text))) and len(a.vocab) < 200
    assert a.decode(a.train) + a.decode(a.test) == text
    assert abs(len(a.test) - 0.1 * len(text)) <= 1
    # the held-out entropy lies between 0 and log|V|, English text far below log|V|
    h = data.unigram_entropy(a.test, len(a.vocab))
    assert 2.0 < h < 0.8 * np.log(len(a.vocab))


def test_unigram_entropy_closed_forms():
    assert data.unigram_entropy(np.zeros(10, int), 5) == 0.0
    assert np.isclose(data.unigram_entropy(np.arange(8), 8), np.log(8))
    assert np.isclose(data.unigram_entropy(np.array([0, 0, 0, 1]), 2),
                      -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))


def test_windows_predict_the_next_character():
    corpus = data.char_corpus("abcdefghij" * 3, test_fraction=0.2)
    assert corpus.vocab == "abcdefghij" and len(corpus.test) == 6
    x, y = data.random_windows(np.random.default_rng(0), corpus.train, batch=5, context=4)
    assert x.shape == y.shape == (5, 4)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal((x + 1) % 10, y)          # the text is a cycle
    x, y = data.tiled_windows(corpus.train, 4)
    np.testing.assert_array_equal(x[:, 0], np.arange(0, 20, 4) % 10)
    assert len(data.tiled_windows(corpus.train, 4, max_windows=2)[0]) == 2


def test_context_longer_than_the_text_is_refused():
    corpus = data.char_corpus("abcdefghij" * 3, test_fraction=0.2)
    data.random_windows(np.random.default_rng(0), corpus.test, 1, context=5)   # 6 chars: ok
    with pytest.raises(ValueError, match="context must be at most 5"):
        data.random_windows(np.random.default_rng(0), corpus.test, 1, context=6)
    with pytest.raises(ValueError, match="context must be at most"):
        data.tiled_windows(corpus.train, 10**6)
    with pytest.raises(ValueError, match="test_fraction"):
        data.char_corpus("abc", test_fraction=1.0)


def test_the_shortest_corpus_is_two_characters():
    corpus = data.char_corpus("ab")                         # one to train on, one held out
    assert corpus.decode(corpus.train) == "a" and corpus.decode(corpus.test) == "b"
    with pytest.raises(ValueError, match="at least 2 characters, got 1"):
        data.char_corpus("a")
