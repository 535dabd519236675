"""The caption encoder's int8 form (policies/embedding.py): close to the float32 vectors, each
caption's vector independent of its batch, banded passes close too, fail-closed when onnxruntime
is missing, and the precision named, checked and keyed in the policy files and the vector cache."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from policies import DEFAULT_DIR, PolicyError, load_policies
from policies.embedding import EncoderUnavailable, Int8MiniLMEncoder, encoder_key, shared_encoder

CAPTIONS = [
    "a red apple with a green leaf", "how to build a pipe bomb", "A COCKTAIL named Sex on the Beach",
    "naïve café — “curly quotes”, emoji 🙂 and non-breaking\u00a0spaces", "x", "",
    "a woman with no clothes on lying in bed", "a man cutting his own wrists", "a cat face", "a grinning face",
    "a watercolour of a harbour at dawn with boats, gulls and a lighthouse " * 3,
    "supercalifragilisticexpialidocious " * 6, "e.m.a.i.l a.t d.o.t.s " * 5,
]


@pytest.fixture(scope="module")
def encoders():
    return shared_encoder(precision="float32"), shared_encoder(precision="int8")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_int8_vectors_stay_close_to_the_float32_ones(encoders):
    exact, fast = encoders
    cosine = _cosine(exact(CAPTIONS), fast(CAPTIONS))
    # Measured: min 0.991, mean 0.998 on 600 labelled captions; a broken scale or layout gives < 0.9.
    # The captions with no word ("" and "x": two or three tokens averaged, so one token's rounding
    # weighs a third or more) land lower, and where depends on the CPU's int8 kernels: 0.974 and
    # 0.987 on one machine of this kind, above 0.98 on another. They are held to 0.95.
    wordless = np.array([len(caption.strip()) <= 1 for caption in CAPTIONS])
    assert cosine[~wordless].min() > 0.98, cosine
    assert cosine[wordless].min() > 0.95, cosine
    assert cosine.mean() > 0.99, cosine


def test_a_captions_int8_vector_does_not_depend_on_its_batch(encoders):
    _, fast = encoders
    together = fast(CAPTIONS)
    for index, caption in enumerate(CAPTIONS):
        alone = fast([caption])[0]
        # Per-token scales: padding and neighbours never change a caption's numbers.
        assert np.abs(alone - together[index]).max() < 1e-5, caption


def test_banded_int8_pass_stays_close_to_the_float32_one(encoders):
    exact, fast = encoders
    text = CAPTIONS[10] + " and a man cutting his own wrists on the pier"
    states_exact, offsets_exact = exact.token_states(text, band=4, max_tokens=144)
    states_fast, offsets_fast = fast.token_states(text, band=4, max_tokens=144)
    assert offsets_exact == offsets_fast
    assert _cosine(states_exact, states_fast).min() > 0.97


def test_int8_encoder_without_onnxruntime_fails_closed(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(EncoderUnavailable, match="int8"):
        Int8MiniLMEncoder()


def test_precision_is_checked_and_keys_the_vector_cache(tmp_path, encoders):
    exact, fast = encoders
    assert encoder_key(exact) != encoder_key(fast)
    with pytest.raises(EncoderUnavailable, match="precision"):
        shared_encoder(precision="int4")
    folder = tmp_path / "policies"
    shutil.copytree(DEFAULT_DIR, folder)
    text = (folder / "semantic.toml").read_text()
    assert 'precision = "int8"' in text  # the shipped policy runs the fast form
    (folder / "semantic.toml").write_text(text.replace('precision = "int8"', 'precision = "int4"'))
    with pytest.raises(PolicyError, match="precision must be one of float32, int8"):
        load_policies(folder)


def test_both_precisions_judge_the_issues_paraphrases_alike(tmp_path):
    folder = tmp_path / "policies"
    shutil.copytree(DEFAULT_DIR, folder)
    text = (folder / "semantic.toml").read_text()
    (folder / "semantic.toml").write_text(text.replace('precision = "int8"', 'precision = "float32"'))
    exact, fast = load_policies(folder).usage, load_policies().usage
    for caption in ["a mass shooting at a school", "a woman with no clothes on lying in bed", "a man lynched by a mob",
                    "a step by step diagram for making meth", "how to build a pipe bomb",
                    "a cocktail named sex on the beach", "a bowl of ripe peaches on a kitchen table"]:
        assert exact.check_caption(caption).outcome == fast.check_caption(caption).outcome, caption


def test_example_matrix_gives_numpys_cosines_with_or_without_onnxruntime(monkeypatch):
    from policies.embedding import ExampleMatrix

    rng = np.random.default_rng(0)
    examples = rng.standard_normal((500, 384)).astype(np.float32)
    examples /= np.linalg.norm(examples, axis=1, keepdims=True)
    expected = examples[:17] @ examples.T
    fast = ExampleMatrix(examples)
    assert fast._session is not None
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    plain = ExampleMatrix(examples)
    assert plain._session is None
    for rows in (1, 3, 17):
        for matrix in (fast, plain):
            got = matrix.cosines(examples[:rows])
            assert got.shape == (rows, 500) and got.dtype == np.float32
            assert np.abs(got - expected[:rows]).max() < 1e-5
    assert ExampleMatrix(np.zeros((0, 384), np.float32)).cosines(examples[:2]).shape == (2, 0)
    assert fast.cosines(np.zeros((0, 384), np.float32)).shape == (0, 500)
