"""onnxruntime sessions: the one place axnb makes them, and an explicit cache of them.

Example:
    >>> import onnx
    >>> from onnx import helper
    >>> g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
    ...     [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
    ...     [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    >>> import numpy as np
    >>> session(helper.make_model(g)).run(None, {"x": np.array([-1, 2], np.float32)})[0].tolist()
    [0.0, 2.0]
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Hashable

import onnx
from onnx import TensorProto, numpy_helper

__all__ = ["SessionCache", "session", "set_default_threads", "shared_copy"]
_BIG = 1 << 16                # NOTE: bytes; smaller initializers serialize faster than they map
_SHARED: dict[str, dict] = {}  # token -> {initializer name: OrtValue}
_TOKENS = itertools.count()
_THREADS: list[int | None] = [None]  # NOTE: intra-op threads of sessions that name none
_LEVELS = {True: "ORT_ENABLE_ALL", False: "ORT_DISABLE_ALL", "all": "ORT_ENABLE_ALL",
           "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
           "disable": "ORT_DISABLE_ALL"}


# NOTE: onnxruntime rewrites that change what a graph computes, off in every axnb session that
# runs optimized (the float model's, at level all). The quantized models run unoptimized
# (axnb.simulate) because more rewrites than these, down to level basic's Identity
# elimination, moved their numbers; these two kinds were found first and matter wherever a
# graph is optimized (the NPU computes GELU/LayerNorm its own way anyway):
# - WeightBiasQuantization (>= 1.21, every level but none): a Conv/Gemm between DQ and Q with a
#   float weight gets per-TENSOR int8 weights (a float bias: unsaturated int32). A plan with FP32
#   weights (or conv_bias_data_type FP32) means float weights: layout_cdla's FP32-weight plan
#   scored 0.072 in NPUBackend against 0.781 in Reference.
# - GELU / LayerNorm / attention fusions (1.32 has GeluFusionL1 and LayerNormFusionL1 at level
#   basic): a fused Gelu differs by 2e-7, enough to flip roundings at later quantizers; PP-OCR
#   det with FP32 on every 7th layer read 0.97812 in NPUBackend and 0.98386 in Reference.
DISABLED_OPTIMIZERS = (
    "WeightBiasQuantization", "GeluFusionL1", "GeluFusionL2", "FastGeluFusion",
    "QuickGeluFusion", "BiasGeluFusion", "LayerNormFusionL1", "LayerNormFusionL2",
    "SimplifiedLayerNormFusion", "SkipLayerNormFusion", "BiasSkipLayerNormFusion",
    "EmbedLayerNormFusion", "AttentionFusion", "GroupQueryAttentionFusion",
    "GroupQueryAttentionPreNormFusion", "SwiGluFusion")


def session(proto: onnx.ModelProto, providers: list[str] | None = None,
            threads: int | None = None, optimize: bool | str = True, consume: bool = False,
            low_memory: bool = False, prepack: bool = True):
    """An onnxruntime InferenceSession from an in-memory proto.

    Args:
        proto: the model.
        providers: execution providers, CPU by default.
        threads: intra-op threads (None: :func:`set_default_threads`'s, else onnxruntime's).
        optimize: graph optimizations: True (all), False (none) or a level name ("basic",
            "extended", "all"). "extended" skips the NCHWc layout rewrites of "all" but still
            fuses float patterns such as Gelu (outputs ~1e-7 relative from none's; bit-identical
            on graphs without such patterns); none builds 3x faster on large graphs.
        consume: the caller hands ``proto`` over (a temporary graph): its large initializers
            are then passed to onnxruntime as arrays instead of being serialized and parsed back
            (1.3 s saved on MiniLM), which empties them in ``proto``.
        low_memory: no memory arena and no memory pattern: each tensor is freed after its last
            reader instead of being held in a preplanned block (large analysis graphs), and
            nodes run in the graph's order (see :func:`axnb.qdq.toposort`).
        prepack: let onnxruntime pre-pack constant weights. NOTE: it does for weights in the
            proto, not for the shared arrays of :func:`shared_copy` graphs, and the packed
            Gemm sums in another order: a ViT's Reference and NPUBackend differed by one
            quantization step at a Gemm and 1.3e-3 in the final cosine. The quantized models
            run unpacked (measured on the zoo: within 10% either way).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    # NOTE: onnxruntime rewrites DQ(int8 weight) -> MatMul into MatMulNBits, which by default
    # quantizes the *activations* to int8 on the fly (accuracy level 4); level 1 keeps them
    # float, so a 16-bit activation plan is simulated at 16 bits as the NPU would run it.
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    threads = threads or _THREADS[0]
    if threads:
        so.intra_op_num_threads = threads
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    if low_memory:
        so.enable_mem_pattern = False
        so.enable_cpu_mem_arena = False
        # NOTE: run the nodes in the graph's own order (qdq.toposort places each reduction
        # right after what it reads). onnxruntime's default order is its own DFS, which held
        # 1.2 GB more per sample in layout_cdla's compare graph (peak 1956 vs 1196 MB).
        so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[optimize])
    keep = _external_initializers(proto, so, consume)
    sess = ort.InferenceSession(proto.SerializeToString(), so,
                                providers=providers or ["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))
    sess._axnb_arrays = keep        # NOTE: onnxruntime does not copy them: keep them alive
    return sess


def set_default_threads(threads: int | None) -> None:
    """Intra-op threads of every later session that does not name its own (None: onnxruntime's
    default, one per core).

    NOTE: a Dask worker sets its own thread count here (:mod:`axnb.cluster`), so N workers on
    one machine do not each start one onnxruntime thread per core.

    Example:
        >>> set_default_threads(1); set_default_threads(None)
    """
    _THREADS[0] = threads


def _external_initializers(proto: onnx.ModelProto, so, consume: bool) -> list:
    """Hand large initializers to onnxruntime as arrays: the shared ones (:func:`shared_copy`)
    always, the others when the proto is ``consume``d (emptied here)."""
    import onnxruntime as ort

    names, vals = [], []
    for t in proto.graph.initializer:
        loc = t.external_data[0].value if t.data_location == TensorProto.EXTERNAL and \
            t.external_data else ""
        if loc.startswith("axnb-shared:"):
            arrays = _SHARED.get(loc.split(":", 1)[1])
            if arrays is None:
                raise RuntimeError(f"initializer {t.name!r}: its shared weights were freed with "
                                   "the Model that owned them (build graphs while it lives)")
            vals.append(arrays[t.name])
            names.append(t.name)
        elif consume and t.raw_data and len(t.raw_data) > _BIG:
            vals.append(ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(t)))
            names.append(t.name)
            _mark(t, "axnb-in-memory")
    if names:
        so.add_external_initializers(names, vals)
    return vals


def _mark(t: onnx.TensorProto, location: str) -> None:
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    t.external_data.add(key="location", value=location)


def shared_copy(owner: object, proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` to build session-only graphs on, whose large initializers are held
    once in memory and shared by every session made from it (or from copies of it).

    NOTE: copying, serializing and parsing MiniLM's 90 MB of weights took ~1 s per session;
    this copy is cheap and its sessions map the same arrays. The shared arrays live as long as
    ``owner`` (the Model). Never save such a proto: its weights are not in it.

    Example:
        >>> import numpy as np
        >>> from onnx import helper
        >>> w = numpy_helper.from_array(np.ones((256, 128), np.float32), "w")
        >>> g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])], [w])
        >>> class Owner: pass
        >>> owner = Owner()                   # the arrays live as long as it does
        >>> p = shared_copy(owner, helper.make_model(g))
        >>> len(p.graph.initializer[0].raw_data)
        0
        >>> float(session(p).run(None, {"x": np.ones((1, 256), np.float32)})[0].sum())
        32768.0
    """
    import onnxruntime as ort

    token = str(next(_TOKENS))
    arrays: dict = {}
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    for t in p.graph.initializer:
        if t.raw_data and len(t.raw_data) > _BIG:
            arrays[t.name] = ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(t))
            _mark(t, f"axnb-shared:{token}")
    _SHARED[token] = arrays
    weakref.finalize(owner, _SHARED.pop, token, None)
    return p


class SessionCache:
    """Sessions (or anything built with one) by key, built on first use and kept.

    Clones of a quantized model that differ only in parameter data share one cache, so a
    U8 <-> U16 toggle reuses every session.

    Example:
        >>> c = SessionCache()
        >>> c.get("k", lambda: 1), c.get("k", lambda: 2), len(c)
        (1, 1, 1)
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, object] = {}

    def get(self, key: Hashable, build: Callable[[], object]):
        if key not in self._items:
            self._items[key] = build()
        return self._items[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __getitem__(self, key: Hashable):
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
