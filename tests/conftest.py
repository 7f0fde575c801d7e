"""Fixtures shared by the trainer's test files."""
import numpy as np
import pytest

from k2ssl_lit.core import num_frames
from k2ssl_lit.corpus import cached_corpus
from k2ssl_lit.data import attach_labels, corpus_cuts


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    "The embedded corpus's train cuts (45, 2.1 to 12.9 s) with random labels (k=20), as a manifest file."
    d = tmp_path_factory.mktemp("data")
    cuts = corpus_cuts(cached_corpus(0.1, 0), "train").to_eager()
    rng = np.random.default_rng(0)
    labels = {c.id: rng.integers(0, 20, num_frames(c.num_samples)) for c in cuts}
    attach_labels(cuts, labels, num_classes=20).to_file(d / "train.jsonl.gz")
    return d / "train.jsonl.gz"
