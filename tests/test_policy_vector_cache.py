"""The example vectors a policy folder's semantic layer learns from are kept on disk, so a new process
(web, worker, CLI) does not spend seconds embedding thousands of examples; what is read back is
spot-checked against the encoder, and anything doubtful is embedded again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from policies.embedding import SPOT_CHECKS, VectorCache, shared_encoder

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [f"a {colour} {thing} on a table" for colour in ("red", "blue", "green", "white", "black")
         for thing in ("apple", "cup", "chair", "book", "lamp", "shoe")]


class CountingEncoder:
    """The shared encoder, counting the texts it is asked to embed."""

    def __init__(self):
        self.inner = shared_encoder()
        self.dim, self.folder, self.max_tokens = self.inner.dim, self.inner.folder, self.inner.max_tokens
        self.precision = self.inner.precision
        self.embedded = 0

    def __call__(self, texts):
        self.embedded += len(texts)
        return self.inner(texts)


def saved_cache(folder: Path) -> tuple[VectorCache, dict[str, np.ndarray]]:
    encoder = CountingEncoder()
    cache = VectorCache(folder, encoder)
    vectors = dict(zip(TEXTS, encoder(TEXTS), strict=True))
    cache.save(vectors)
    return cache, vectors


def test_vectors_read_back_equal_and_only_a_spot_check_is_embedded(tmp_path):
    cache, vectors = saved_cache(tmp_path)
    reader = VectorCache(tmp_path, CountingEncoder())
    loaded = reader.load()
    assert set(loaded) == set(vectors)
    assert max(float(np.abs(loaded[t] - vectors[t]).max()) for t in TEXTS) == 0.0
    assert 0 < reader.encoder.embedded <= SPOT_CHECKS < len(TEXTS)
    assert [p.name for p in tmp_path.iterdir()] == [cache.path.name]  # no temporary file left


def test_a_cache_that_disagrees_with_the_encoder_is_not_used(tmp_path):
    cache, vectors = saved_cache(tmp_path)
    with np.load(cache.path) as data:
        texts, stored = data["texts"], data["vectors"].copy()
    rng = np.random.default_rng(0)
    stored += rng.normal(0, 0.05, stored.shape).astype(np.float32)  # e.g. another machine's arithmetic
    with open(cache.path, "wb") as handle:
        np.savez(handle, texts=texts, vectors=stored)
    assert VectorCache(tmp_path, CountingEncoder()).load() == {}


def test_a_torn_or_malformed_cache_is_ignored_without_error(tmp_path):
    cache, _ = saved_cache(tmp_path)
    cache.path.write_bytes(cache.path.read_bytes()[:1000])
    assert VectorCache(tmp_path, CountingEncoder()).load() == {}
    with open(cache.path, "wb") as handle:
        np.savez(handle, texts=np.array(TEXTS[:3]), vectors=np.zeros((3, 7), dtype=np.float32))
    assert VectorCache(tmp_path, CountingEncoder()).load() == {}


def test_an_unwritable_cache_folder_is_only_a_warning(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    cache, _ = saved_cache(blocker / "cache")
    assert "not written" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]
    assert cache.load() == {}


def test_a_second_process_judges_alike_without_embedding_the_examples_again(tmp_path):
    # The shipped folder with every tenth labelled training caption: the same kind of layer, a quarter
    # of the phrases to embed in the first, cold process (a minute for the whole folder on this CPU).
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies" / "default", folder)
    rows = (folder / "semantic_training.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "semantic_training.csv").write_text("".join(rows[:1] + rows[1::10]), encoding="utf-8")
    cache = tmp_path / "cache"
    script = textwrap.dedent("""
        import json, sys
        import policies.embedding as embedding
        counted = [0]
        call = embedding.MiniLMEncoder.__call__
        def counting(self, texts, *args, **kwargs):
            counted[0] += len(texts)
            return call(self, texts, *args, **kwargs)
        embedding.MiniLMEncoder.__call__ = counting
        from policies import load_policies
        usage = load_policies(sys.argv[1]).usage
        captions = ["a red apple on a table", "how to build a pipe bomb at home", "a man cutting his own wrists"]
        outcomes = [usage.check_caption(c).outcome.value for c in captions]
        print(json.dumps({"outcomes": outcomes, "embedded": counted[0]}))
    """)
    env = {"STACKGAN_POLICY_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    runs = [json.loads(subprocess.run([sys.executable, "-c", script, str(folder)], cwd=ROOT, env=env, capture_output=True,
                                      text=True, timeout=300, check=True).stdout.strip().splitlines()[-1])
            for _ in range(2)]
    assert runs[0]["outcomes"] == runs[1]["outcomes"] == ["allow", "deny", "deny"]
    assert runs[0]["embedded"] > 1000  # every example of the folder
    assert runs[1]["embedded"] < 100  # the spot check and the captions' own windows
    assert len(list(cache.glob("vectors-*.npz"))) == 1
