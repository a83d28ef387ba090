"""Coupled channel groups from torch-pruning's dependency graph.

A :class:`ChannelGroup` is a set of channels that must be kept or removed together: a conv's output
channels plus everything tied to them (its BatchNorm, the input channels of every consumer, the other
convs feeding the same residual add, the depthwise conv of an inverted residual, slices of a concatenation,
the flattened features of a classifier). Groups are found once on the dense model; each member records
which channel indices of which module it owns, aligned to the group's root channels.

A group whose channels pass through a grouped (non-depthwise) conv is pruned in *stripes*: one channel of every
conv group together (the same position in each), so that every group keeps as many channels as the others and
the conv stays grouped (``unit`` = the number of conv groups, ``stripes`` = each root channel's stripe). A group in
which torch-pruning maps one layer channel to two root channels (a Ghost module's channel and its depthwise copy)
is striped the same way, the two removed together.

A group is *frozen* (never pruned) when removing its channels would not be exact or torch-pruning cannot
do it safely: it touches the classifier's outputs, grouped convs that disagree on the stripes, a normalisation other
than BatchNorm (e.g. ConvNeXt's channel LayerNorm), a bare ``nn.Parameter``, or a split / slice whose sizes the
model's code fixes (a CSP block's ``x.split(c // 2)``; a registered split owner's are rewritten instead), a reshape
that moves channels between axes (a channel shuffle), or copies that do not pair evenly. Its ``reason`` says
which layer.
"""
from __future__ import annotations

import contextlib
import signal
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp

from prunekit.core.outputs import output_layers
from prunekit.errors import PrunekitError
from prunekit.models.extensions import CONSUMERS, PRUNERS, SPLIT_OWNERS
# torch-pruning's channel inference gives up on long op chains with a warning (while tracing, and again while
# pruning); the sizes come from the trace instead (_Graph), so the warning says nothing to a user
warnings.filterwarnings("ignore", message="Maximum recursive depth reached", category=UserWarning)

# Modules whose channels a group may own exactly, and those whose *input* channels a group touches; a model
# family with a module of its own registers a pruner for it next to the model
# (:func:`prunekit.models.extensions.register_pruner`), read here when a graph is built.
BASE_MEMBER_TYPES: tuple = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
BASE_CONSUMER_TYPES: tuple = (nn.Conv2d, nn.Linear)


def exact_member_types() -> tuple:
    return (*BASE_MEMBER_TYPES, *PRUNERS)


def consumer_types() -> tuple:
    return (*BASE_CONSUMER_TYPES, *CONSUMERS)


@dataclass
class Member:
    """One module's share of a group: ``idxs[k]`` of ``module`` belongs to root channel ``root_idxs[k]``."""

    module: str
    kind: str  # "out" (output channels / features) or "in" (input channels)
    idxs: list[int]
    root_idxs: list[int]


@dataclass
class ChannelGroup:
    root: str  # conv whose output channels define the group (and its channel numbering)
    channels: int
    members: list[Member] = field(default_factory=list)
    reason: str | None = None  # why the group is frozen; None = prunable
    branch: str | None = None  # the residual block whose branch this group opens (width 0 drops it), if any
    unit: int = 1  # channels removed together: the conv groups of a grouped conv the channels pass through
    stripes: list[int] | None = None  # each root channel's stripe (unit > 1): a stripe is removed whole

    @property
    def prunable(self) -> bool:
        return self.reason is None and self.channels > self.unit

    def consumers(self, model_modules: dict[str, nn.Module]) -> list[Member]:
        return [m for m in self.members if m.kind == "in" and isinstance(model_modules[m.module], consumer_types())]


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
    """torch-pruning's graph, with each concatenation's input sizes taken from the trace itself.

    torch-pruning infers them by walking back to a layer with a known channel count; through a slice or a
    tuple-passing block (a dual-path network) that walk ends with nothing and its concat index mapping fails
    (``int + NoneType``). Autograd records the real shapes, so the concat is mapped as it ran; the slices
    themselves stay frozen (:data:`_FIXED_SIZE_OPS`)."""

    def _build_dependency(self, module2node):
        self.channel_movers: set[int] = set()
        for node in module2node.values():
            if node.type == tp.ops.OPTYPE.SPLIT:
                _order_chunks(node)
            elif node.type == tp.ops.OPTYPE.RESHAPE and _reshape_kind(node.grad_fn) in ("keeps", "moves"):
                # mapped as identity: right for one that keeps channels (torch-pruning took (B, C, H·W) for a
                # flatten, and its group search then grew indices without end); one that moves them (torch-pruning
                # divided by zero on a channel shuffle) also freezes every group through it (:func:`_op_reason`)
                if _reshape_kind(node.grad_fn) == "moves":
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
                node.module.offsets = [0, *np.cumsum(sizes).tolist()]
                tp.dependency.index_mapping.update_split_index_mapping(self, node)

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
            before = self._mapped.setdefault(id(node), sizes)
            if sizes != before:
                op.offsets = [0, *np.cumsum(sizes).tolist()]
                update(self, node)
                self._mapped[id(node)] = sizes


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


def _member_reason(module: nn.Module, name: str, kind: str, classifier: str | None) -> str | None:
    if name == classifier and kind == "out":
        return f"it reaches the classifier's outputs ({name})"
    if not isinstance(module, exact_member_types()):
        return f"{name} ({type(module).__name__}) cannot be pruned exactly"
    return None


# functional ops whose channel counts are constants in the model's code: the surgery cannot change them, so a
# group whose channels pass through one would leave a split / slice that no longer matches its input (a CSP
# block's split halves feeding a residual add, timm's cspnet), and the pruned model would not run
_FIXED_SIZE_OPS = {tp.ops._SplitOp: "split (torch.split / chunk)", tp.ops._SliceOp: "slice",
                   tp.ops._UnbindOp: "unbind"}


def _op_reason(op, owned: set[int] = frozenset(), movers: set[int] = frozenset()) -> str | None:
    if id(op) in owned:
        return None
    if id(op) in movers:
        return (f"its channels go through a reshape that moves channels between axes ({op!r}, e.g. a channel "
                "shuffle): removing some would reorder the rest")
    for kind, words in _FIXED_SIZE_OPS.items():
        if isinstance(op, kind):
            return (f"its channels go through a {words} whose sizes are fixed in the model's code "
                    f"({op!r}): pruning them would change what it returns")
    return None


def find_groups(model: nn.Module, dg: tp.DependencyGraph, classifier: str | None,
                timeout: float = 300.0, input_size: tuple[int, ...] | None = None) -> list[ChannelGroup]:
    """All conv-rooted channel groups of ``model``, frozen ones included (with their reason). With
    ``input_size``, every group whose channels a model output exposes (a segmentation head's class map, a
    detector's box map, any output of a tuple or dict) is frozen, naming the output."""
    names = {m: n for n, m in model.named_modules()}
    clf = dict(model.named_modules()).get(classifier) if classifier else None
    groups: list[ChannelGroup] = []
    owned = owned_splits(model, dg)
    try:
        with time_limit(timeout, "torch-pruning's group search"), memory_limit("torch-pruning's group search"):
            for g in dg.get_all_groups(ignored_layers=[clf] if clf is not None else [],
                                       root_module_types=(nn.Conv2d,)):
                groups.append(_to_channel_group(g, dg, names, classifier, owned, getattr(dg, "channel_movers", set())))
    except PrunekitError:
        raise
    except Exception as e:
        raise PrunekitError(
            f"torch-pruning failed while grouping channels: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from e
    if input_size is not None:
        freeze_outputs(groups, output_layers(model, input_size))
    return groups


def freeze_outputs(groups: list[ChannelGroup], outputs: dict[str, str]) -> None:
    """Freeze every group whose output channels include a layer an output exposes (``outputs``: layer → output)."""
    for g in groups:
        hit = next((m.module for m in g.members if m.kind == "out" and m.module in outputs), None)
        if hit is not None and g.reason is None:
            g.reason = f"its channels are the model's output {outputs[hit]!r} (made by {hit})"


def _to_channel_group(g, dg, names, classifier, owned: set[int] = frozenset(),
                      movers: set[int] = frozenset()) -> ChannelGroup:
    root_module = g[0].dep.target.module
    group = ChannelGroup(root=names[root_module], channels=len(g[0].idxs))
    seen: dict[tuple[str, str], dict[int, int]] = {}
    grouped: list = []  # (grouped conv, its member)
    copies: list[tuple[int, int]] = []  # root channels one removal takes together (a Ghost module's copies)
    for item in g.items:
        dep, idxs = item.dep, item.idxs
        target = dep.target.module
        if isinstance(target, nn.Parameter):
            group.reason = group.reason or f"a bare parameter ({dg._param_to_name.get(target, '?')}) is coupled"
            continue
        name = names.get(target)
        if name is None:  # a functional op (add, cat, flatten, ...): carries indices, owns nothing
            group.reason = group.reason or _op_reason(target, owned, movers)
            continue
        kind = "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in"
        mapping = dict(zip(map(int, idxs), map(int, item.root_idxs)))
        if (name, kind) in seen:  # reached twice: a channel it maps to two root channels couples those two
            first = seen[(name, kind)]
            copies += [(first[k], r) for k, r in mapping.items() if k in first and first[k] != r]
            continue
        seen[(name, kind)] = mapping
        group.reason = group.reason or _member_reason(target, name, kind, classifier)
        member = Member(name, kind, [int(i) for i in idxs], [int(r) for r in item.root_idxs])
        group.members.append(member)
        if _is_grouped(target):
            grouped.append((target, member))
    copies += _copies(g, dg)
    if copies:  # removed together, as stripes (not combined with a grouped conv's stripes)
        group.reason = group.reason or (_pair_stripes(group, copies) if not grouped else COPIES)
    else:
        group.reason = group.reason or _stripe(group, grouped)
    return group


COPIES = ("torch-pruning maps some layer's channels to two root channels of this group (a layer reached twice: a "
          "concatenation with a depthwise copy of itself as in a Ghost module, or paths stacked and reshaped as in a "
          "selective-kernel block) in sets that are not all the same size, so they cannot be removed together: "
          "removal would not be exact")


def _pair_stripes(group: ChannelGroup, copies: list[tuple[int, int]]) -> str | None:
    """Make the root channels that one removal takes together (``copies``: a channel and its depthwise copy,
    which torch-pruning maps to two root channels) the group's stripes, so a plan removes them together; the
    reason to freeze the group when those sets are not all the same size."""
    parent = list(range(group.channels))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in copies:
        if not (0 <= a < group.channels and 0 <= b < group.channels):
            return COPIES
        parent[find(a)] = find(b)
    roots = [find(i) for i in range(group.channels)]
    sizes = np.bincount(roots, minlength=group.channels)
    unit = int(sizes[roots[0]])
    if unit < 2 or any(sizes[r] != unit for r in roots):
        return COPIES
    number = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    group.unit, group.stripes = unit, [number[r] for r in roots]
    return None


def _is_grouped(module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and not (
        module.groups == module.in_channels == module.out_channels)


def _stripe(group: ChannelGroup, grouped: list) -> str | None:
    """Set ``group.unit`` / ``group.stripes`` from the grouped convs its channels pass through; the reason to
    freeze it when they do not agree on one arrangement (or do not cover every channel of the group)."""
    stripes = None
    for conv, m in grouped:
        dim = conv.in_channels if m.kind == "in" else conv.out_channels
        per = dim // conv.groups
        mine = [-1] * group.channels
        for i, r in zip(m.idxs, m.root_idxs):
            if 0 <= r < group.channels:
                mine[r] = i % per
        counts = np.bincount([s for s in mine if s >= 0], minlength=per)
        if -1 in mine or len(m.idxs) != group.channels or not (counts == conv.groups).all() or (
                stripes is not None and (mine != stripes or conv.groups != group.unit)):
            return (f"grouped convolution {m.module} (groups={conv.groups}): its conv groups cannot all keep the "
                    "same number of channels under this group's couplings")
        stripes, group.unit = mine, conv.groups
    group.stripes = stripes
    return None


def _copies(g, dg) -> list[tuple[int, int]]:
    """Pairs of root channels that are one producer channel reached twice: a channel op (elementwise, concat) whose
    input channel k maps to another root channel than its own channel k does (torch-pruning reached the producer
    through a depthwise copy of it first, a Ghost module, and kept that mapping)."""
    maps: dict[int, dict[int, int]] = {}
    for item in g.items:
        if dg.is_out_channel_pruning_fn(item.dep.handler):
            maps.setdefault(id(item.dep.target), {}).update(zip(map(int, item.idxs), map(int, item.root_idxs)))
    pairs = []
    for item in g.items:
        node = item.dep.target
        if isinstance(node.module, tp.ops._ElementWiseOp):
            offsets = [0] * len(node.inputs)
        elif isinstance(node.module, tp.ops._ConcatOp) and node.module.offsets:
            offsets = list(node.module.offsets)
        else:
            continue
        own = dict(zip(map(int, item.idxs), map(int, item.root_idxs)))
        for i, inp in enumerate(node.inputs):
            produced, off = maps.get(id(inp)) or {}, offsets[i] if i < len(offsets) else 0
            pairs += [(r, produced[k - off]) for k, r in own.items() if k >= off and produced.get(k - off, r) != r]
    return pairs


def frozen_summary(groups: list[ChannelGroup]) -> list[str]:
    return [f"{g.root}: {g.reason}" for g in groups if g.reason]
