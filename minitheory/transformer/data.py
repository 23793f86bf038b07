r"""Real data for the small transformers: 8x8 handwritten digits and character-level text.

Boix-Adsera et al. (2023, arXiv 2306.07042 v2, Sec. 5 and App. B) train a ViT on CIFAR-10/100 and
ImageNet and GPT-2 on Wikitext-103. At laptop scale we use data that is real, offline and not
written by us [project choice: the paper's data sets are far too large for a NumPy model]:

**Vision: the 8x8 handwritten digits.** ``digits.csv.gz`` in this folder is byte for byte the
copy that scikit-learn 1.9.1 bundles (``sklearn/datasets/data/digits.csv.gz``) of the test part
of the UCI data set "Optical Recognition of Handwritten Digits" by E. Alpaydin and C. Kaynak
(1998), https://archive.ics.uci.edu/dataset/80, licensed CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/). 1797 images of 8x8 pixels, each pixel the
number of "on" pixels (0-16) in a 4x4 block of a 32x32 bitmap; 10 classes. One CSV row per
image: 64 pixels (row-major), then the label. Unchanged here; the loader verifies its SHA-256
(:data:`DIGITS_SHA256`) and refuses a file that does not match.

**Language: the CPython documentation topics.** ``pydoc_data.topics.topics`` (part of every
CPython installation since 3.2; about 465k characters of English prose and Python code in
3.11; the text is the Python documentation, PSF licence) concatenated in sorted topic order.
The exact text depends on the Python version, so every run records its length and SHA-256.

Shapes: images ``(N, 8, 8)``; patches ``(N, n_patches, patch**2)``; character ids ``(n_chars,)``.
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..validation import check_float, check_int

#: The shipped digits file and its SHA-256 (equal to scikit-learn 1.9.1's copy).
DIGITS_FILE = Path(__file__).with_name("digits.csv.gz")
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
DIGITS_PROVENANCE = ("UCI Optical Recognition of Handwritten Digits (E. Alpaydin, C. Kaynak "
                     "1998), CC BY 4.0; the copy bundled with scikit-learn 1.9.1")
#: Number of images and side length of the digits.
N_DIGITS, SIDE = 1797, 8


def sha256(path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_digits(path=DIGITS_FILE, expected_sha256: str = DIGITS_SHA256):
    """The 1797 digits as ``(images (1797, 8, 8) uint8 in 0..16, labels (1797,) int64)``.

    Raises ``ValueError`` when the file's SHA-256 is not ``expected_sha256`` (a damaged or
    replaced file), naming the path and both digests.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"digits file {path} is missing; reinstall minitheory")
    got = sha256(path)
    if got != expected_sha256:
        raise ValueError(f"digits file {path} has SHA-256 {got}, expected {expected_sha256}: "
                         f"the file is damaged or not the UCI digits; reinstall minitheory")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (N_DIGITS, SIDE * SIDE + 1):
        raise ValueError(f"digits file {path} has shape {table.shape}, expected "
                         f"({N_DIGITS}, {SIDE * SIDE + 1})")
    images = table[:, :-1].reshape(-1, SIDE, SIDE).astype(np.uint8)
    return images, table[:, -1]


def digits_split(seed: int, n_test: int = 300):
    r"""A seeded train/test split of the digits, pixels scaled to :math:`[0, 1]` (``/ 16``).

    The permutation comes from ``np.random.default_rng(seed)``; the last ``n_test`` images of it
    are the test set. Returns ``dict(x_train (N_train, 8, 8), y_train (N_train,), x_test,
    y_test)``, float64 images and int64 labels (default 1497 / 300).
    """
    seed = check_int("seed", seed, low=0)
    n_test = check_int("n_test", n_test, low=1, high=N_DIGITS - 1)
    images, labels = load_digits()
    order = np.random.default_rng(seed).permutation(N_DIGITS)
    train, test = order[:-n_test], order[-n_test:]
    x = images.astype(np.float64) / 16.0
    return {"x_train": x[train], "y_train": labels[train],
            "x_test": x[test], "y_test": labels[test]}


def patchify(images, patch: int) -> np.ndarray:
    r"""Cut ``(N, 8, 8)`` images into non-overlapping ``patch x patch`` squares.

    The ViT's input (Dosovitskiy et al. 2021; the paper's ViT uses patch 4 on 32x32 CIFAR):
    patches in row-major order, each flattened row-major, so
    ``out[n, i * (8 // patch) + j] = images[n, i*patch:(i+1)*patch, j*patch:(j+1)*patch].ravel()``.
    Returns ``(N, (8 // patch)**2, patch**2)``. ``patch`` must divide 8 (1, 2, 4 or 8).
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise ValueError(f"images must have shape (N, {SIDE}, {SIDE}), got {images.shape}")
    patch = check_int("patch", patch, low=1, high=SIDE)
    if SIDE % patch:
        raise ValueError(f"patch must divide {SIDE} (1, 2, 4 or 8), got {patch}")
    g = SIDE // patch
    out = images.reshape(-1, g, patch, g, patch).transpose(0, 1, 3, 2, 4)
    return out.reshape(-1, g * g, patch * patch)


# --------------------------------------------------------------------------------------------
# Character-level text
# --------------------------------------------------------------------------------------------
def pydoc_text() -> str:
    """The CPython documentation topics, joined in sorted topic order with a blank line."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[name] for name in sorted(topics))


@dataclass(frozen=True)
class CharCorpus:
    """A character-level corpus split into a training part and a held-out tail.

    ``vocab`` is the sorted set of characters of the whole text; ``train`` and ``test`` are
    int64 ids into it. ``sha256`` identifies the text (it depends on the Python version).
    """

    vocab: str
    train: np.ndarray
    test: np.ndarray
    sha256: str

    @property
    def n_chars(self) -> int:
        return len(self.train) + len(self.test)

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] for i in np.asarray(ids).ravel())


def char_corpus(text: str | None = None, test_fraction: float = 0.1) -> CharCorpus:
    """Encode ``text`` (default :func:`pydoc_text`) as character ids; the last
    ``test_fraction`` of it is held out (a contiguous tail, so no window straddles the split)."""
    text = pydoc_text() if text is None else text
    if not isinstance(text, str) or len(text) < 2:
        raise ValueError(f"text must be a string of at least 2 characters, got {len(text)}")
    test_fraction = check_float("test_fraction", test_fraction, low=0.0, high=1.0,
                                low_open=True, high_open=True)
    vocab = "".join(sorted(set(text)))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))
    n_test = max(1, int(round(test_fraction * len(ids))))
    if n_test >= len(ids):
        raise ValueError(f"test_fraction={test_fraction} leaves no training text")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return CharCorpus(vocab, ids[:-n_test], ids[-n_test:], digest)


def check_context(context: int, n_chars: int, name: str = "context") -> int:
    """``context`` must leave room for a next character: ``1 <= context <= n_chars - 1``."""
    context = check_int(name, context, low=1)
    if context > n_chars - 1:
        raise ValueError(f"{name} must be at most {n_chars - 1} (the split holds {n_chars} "
                         f"characters and each window needs context + 1), got {context}")
    return context


def char_windows(ids, starts, context: int):
    """Windows of ``context`` ids and their next ids: ``inputs[b, i] = ids[starts[b] + i]``,
    ``targets[b, i] = ids[starts[b] + i + 1]``; both ``(B, context)`` int64."""
    idx = np.asarray(starts)[:, None] + np.arange(context + 1)
    win = np.asarray(ids)[idx]
    return win[:, :-1], win[:, 1:]


def random_windows(rng: np.random.Generator, ids, batch: int, context: int):
    """``batch`` windows at uniform random starts (training batches); see :func:`char_windows`."""
    ids = np.asarray(ids)
    context = check_context(context, len(ids))
    batch = check_int("batch", batch, low=1)
    starts = rng.integers(0, len(ids) - context, size=batch)
    return char_windows(ids, starts, context)


def tiled_windows(ids, context: int, max_windows: int | None = None):
    """Non-overlapping windows covering ``ids`` from the start (held-out evaluation): window
    ``b`` starts at ``b * context``; at most ``max_windows`` of them, evenly spaced."""
    ids = np.asarray(ids)
    context = check_context(context, len(ids))
    starts = np.arange(0, len(ids) - context, context)
    if max_windows is not None and len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
    return char_windows(ids, starts, context)


def unigram_entropy(ids, vocab_size: int) -> float:
    r"""Entropy of the character frequencies of ``ids`` in nats:
    :math:`H = -\sum_c p_c \log p_c`, the loss of the best context-free predictor of that text."""
    counts = np.bincount(np.asarray(ids).ravel(), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
