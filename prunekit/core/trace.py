"""torch-pruning's dependency graph of a model, traced and corrected where torch-pruning slips.

:func:`build_graph` traces the model on one batch (as one argument: torch-pruning's own ``model(*example)`` runs a
network without BatchNorm on one unbatched image) under a time and a memory limit, into :class:`_Graph`, which
fixes what torch-pruning maps wrongly before any group is built: a concatenation's input sizes and a chunk's sizes
are read from autograd's record of the trace; a split's consumers are put in chunk order; a reshape that keeps
channels on axis 1 maps as identity, one that moves them (a channel shuffle) too and is recorded so its groups
freeze; split and concat offsets are re-mapped after each group's removal. A model family's split owners
(:func:`prunekit.models.extensions.register_split_owner`) are found here and re-synced after a surgery.
Groups themselves are :mod:`prunekit.core.graph`'s.
"""
from __future__ import annotations

import contextlib
import signal
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp

from prunekit.errors import PrunekitError
from prunekit.models.extensions import PRUNERS, SPLIT_OWNERS

# torch-pruning's channel inference gives up on long op chains with a warning (while tracing, and again while
# pruning); the sizes come from the trace instead (_Graph), so the warning says nothing to a user
warnings.filterwarnings("ignore", message="Maximum recursive depth reached", category=UserWarning)


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Raise PrunekitError if the block runs longer than ``seconds`` (main thread, POSIX only)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def _alarm(signum, frame):
        raise PrunekitError(f"{what} did not finish within {seconds:.0f} s; this architecture is not supported")

    try:
        old = signal.signal(signal.SIGALRM, _alarm)
    except ValueError:  # not in the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _meminfo(path: str, key: str) -> int:
    """A ``key: N kB`` line of a /proc file, in bytes."""
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no {key} in {path}")


@contextlib.contextmanager
def memory_limit(what: str, share: float = 0.8, headroom: int | None = None):
    """Inside the block, the process may map at most what it maps now plus ``share`` of the memory available
    (or ``headroom`` bytes): an architecture whose tracing would take more (Swin V2: > 19 GB at 224²) ends with
    a MemoryError that the caller turns into one ``error:`` line, instead of the OS killing the process (Linux;
    elsewhere, or under a tighter limit already set, nothing changes)."""
    try:
        import resource

        extra = headroom if headroom is not None else int(share * _meminfo("/proc/meminfo", "MemAvailable"))
        cap = _meminfo("/proc/self/status", "VmSize") + extra
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        yield
        return
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    except MemoryError:
        raise PrunekitError(f"{what} ran out of memory (it needed more than {extra / 2**30:.1f} GB more): this "
                            "architecture is too large to trace at this input size; try a smaller --input-size"
                            ) from None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _concat_sizes(grad_fn) -> list[int] | None:
    """The channel count of each tensor a ``torch.cat`` along dim 1 joined, read from autograd's own record of
    each input's shape; None unless every input is a distinct traced tensor (the case torch-pruning links)."""
    if getattr(grad_fn, "_saved_dim", None) not in (1, -3):
        return None
    sizes, seen = [], set()
    for fn, nr in grad_fn.next_functions:
        if fn is None or "accumulategrad" in fn.name().lower() or fn in seen:
            return None
        seen.add(fn)
        shape = fn._input_metadata[nr].shape
        if len(shape) < 2:
            return None
        sizes.append(int(shape[1]))
    return sizes


def _reshape_kind(grad_fn) -> str | None:
    """What a reshape does to the channel axis, read from autograd's record of its input and output shapes:
    ``"flatten"`` into (B, C·H·W) (torch-pruning maps it), ``"keeps"`` C on axis 1 ((B, C, H, W) → (B, C, H·W) →
    (B, C, 1, 1): channel k stays channel k), ``"moves"`` channels to another axis or mixes them with one (a channel
    shuffle's view into (B, groups, C / groups, H, W) and back); None when the shapes are not recorded."""
    ins = tuple(getattr(grad_fn, "_saved_self_sym_sizes", None) or getattr(grad_fn, "_saved_self_sizes", None) or ())
    meta = getattr(grad_fn, "_input_metadata", None)
    if len(ins) < 2 or not meta or len(meta[0].shape) < 2:
        return None
    out = tuple(meta[0].shape)
    if len(out) == 2 and len(ins) > 2:
        return "flatten"
    return "keeps" if out[1] == ins[1] else "moves"


def _order_chunks(split) -> None:
    """Put a split's consumers in chunk order: torch-pruning lists them in the order its trace met them (often
    last chunk first) and then maps chunk i's offsets to the i-th, which sends channels to the wrong chunk. Each
    consumer's autograd edge says which output of the split it took; left as it is unless that is unambiguous."""
    chunk = {}
    for out in split.outputs:
        nrs = [nr for fn, nr in (getattr(out.grad_fn, "next_functions", None) or ()) if fn is split.grad_fn]
        if len(nrs) != 1:
            return
        chunk[id(out)] = nrs[0]
    if len(set(chunk.values())) == len(split.outputs):
        split.outputs.sort(key=lambda out: chunk[id(out)])


class _Graph(tp.DependencyGraph):
    """torch-pruning's graph, with what it maps wrongly taken from the trace itself.

    Concatenation input sizes: torch-pruning infers them by walking back to a layer with a known channel count;
    through a slice or a tuple-passing block (a dual-path network) that walk ends with nothing and its concat
    index mapping fails (``int + NoneType``); autograd records the real shapes, so the concat is mapped as it ran.
    Chunk sizes (:meth:`size_splits`), a split's consumers in chunk order (:func:`_order_chunks`), reshapes that
    keep or move channels (:func:`_reshape_kind`) and offsets after each group's removal (:meth:`_remap`) the
    same way. Fixed-size splits and slices themselves stay frozen (``graph._FIXED_SIZE_OPS``)."""

    def _build_dependency(self, module2node):
        self.channel_movers: set[int] = set()
        for node in module2node.values():
            if node.type == tp.ops.OPTYPE.SPLIT:
                _order_chunks(node)
            elif node.type == tp.ops.OPTYPE.RESHAPE and (kind := _reshape_kind(node.grad_fn)) in ("keeps", "moves"):
                # mapped as identity: right for one that keeps channels (torch-pruning took (B, C, H·W) for a
                # flatten, and its group search then grew indices without end); one that moves them (torch-pruning
                # divided by zero on a channel shuffle) also freezes every group through it (graph._op_reason)
                if kind == "moves":
                    self.channel_movers.add(id(node.module))
                node.type = tp.ops.OPTYPE.ELEMENTWISE
        super()._build_dependency(module2node)
        for node in module2node.values():
            if node.type == tp.ops.OPTYPE.CONCAT and node.module.concat_sizes is None:
                sizes = _concat_sizes(node.grad_fn)
                if sizes is not None and len(sizes) == len(node.inputs):
                    node.module.concat_sizes = sizes
        self._mapped = {}

    def size_splits(self) -> None:
        """Each split's chunk sizes from autograd's record of its outputs' shapes: for ``x.chunk(2, 1)`` this torch
        records one chunk size, which torch-pruning does not read, and infers the sizes from the consumers instead
        (wrongly, through a concatenation: ShuffleNetV2)."""
        for node in self.module2node.values():
            if node.type != tp.ops.OPTYPE.SPLIT or getattr(node.grad_fn, "_saved_dim", None) not in (1, -3):
                continue
            meta = getattr(node.grad_fn, "_input_metadata", None) or []
            sizes = [int(m.shape[1]) for m in meta if len(m.shape) >= 2]
            if len(sizes) == len(meta) == len(node.outputs) and sizes != node.module.split_sizes:
                node.module.split_sizes = sizes
                self._map(node, sizes, tp.dependency.index_mapping.update_split_index_mapping)

    def get_pruning_group(self, module, pruning_fn, idxs):
        self._remap()
        return super().get_pruning_group(module, pruning_fn, idxs)

    def _remap(self) -> None:
        """Re-derive the index mappings of every split and concatenation whose sizes an earlier group's removal
        changed. torch-pruning updates the sizes as it prunes but keeps the offsets it mapped with when it traced,
        so a second group through the same split (a mixed conv's chunks) would be sent to the wrong chunk."""
        for node in self.module2node.values():
            op = node.module
            if node.type == tp.ops.OPTYPE.SPLIT and op.split_sizes is not None:
                sizes, update = tuple(op.split_sizes), tp.dependency.index_mapping.update_split_index_mapping
            elif node.type == tp.ops.OPTYPE.CONCAT and op.concat_sizes is not None:
                sizes, update = tuple(op.concat_sizes), tp.dependency.index_mapping.update_concat_index_mapping
            else:
                continue
            if sizes != self._mapped.setdefault(id(node), sizes):
                self._map(node, sizes, update)

    def _map(self, node, sizes, update) -> None:
        """Offsets from ``sizes``, and torch-pruning's index mapping of ``node`` made again from them."""
        node.module.offsets = [0, *np.cumsum(sizes).tolist()]
        update(self, node)
        self._mapped[id(node)] = tuple(sizes)


def sync_split_owners(model: nn.Module) -> None:
    """After a surgery: every registered split owner (:func:`prunekit.models.extensions.register_split_owner`)
    rewrites the sizes it splits with from its pruned children."""
    for m in model.modules():
        sync = SPLIT_OWNERS.get(type(m))
        if sync is not None:
            sync(m)


def owned_splits(model: nn.Module, dg: tp.DependencyGraph) -> set[int]:
    """The split ops (by id) whose every chunk goes straight into a child of one registered split owner, one
    chunk per child in order: pruning through them is exact once the owner's sizes are rewritten."""
    owned = set()
    for owner in model.modules():
        if type(owner) not in SPLIT_OWNERS:
            continue
        children = list(owner.children())
        for node in dg.module2node.values():
            if node.type == tp.ops.OPTYPE.SPLIT and [o.module for o in node.outputs] == children:
                owned.add(id(node.module))
    return owned


def _call(model: nn.Module, x: torch.Tensor):
    return model(x)


def build_graph(model: nn.Module, input_size: tuple[int, int, int], timeout: float = 120.0) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model`` (traced on one random input), with our custom pruners."""
    example = torch.randn(1, *input_size)
    was_training = model.training
    try:
        with time_limit(timeout, "torch-pruning's dependency tracing"), memory_limit(
                "torch-pruning's dependency tracing"), torch.enable_grad():
            # the batch as one argument: torch-pruning otherwise tries ``model(*example)`` first, which a network
            # without BatchNorm runs on one unbatched image (SSD's VGG), and traces channels on the wrong axis
            dg = _Graph().build_dependency(
                model, example, forward_fn=_call, customized_pruners=dict(PRUNERS), verbose=False)
            dg.size_splits()
    except PrunekitError:
        raise
    except Exception as e:
        raise PrunekitError(
            f"torch-pruning cannot trace {type(model).__name__}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from e
    finally:
        model.train(was_training)
    return dg
