"""Bounds on what a DCP `.metadata` may hold, checked before any of it is used.

A pickle is a program: a few KB can describe a structure whose *tree* is exponential (each level
a list holding the level below twice, through the pickle memo), a nesting a million deep, a cycle,
or integers of any size. Unpickling such a file is cheap — the memo shares objects — but every
later walk that treats the graph as a tree (`repr` for an error message, `tuple(...)`, `str`) takes
exponential time, recurses past Python's limit, or allocates what the numbers say.

`check_graph` walks what the restricted unpickler returned once, iteratively, each object once,
whatever records it holds (the allowlist in `unpickle.py` decides which records exist; this layer
does not depend on them), and refuses, naming only counts:

- nesting deeper than `MAX_DEPTH` (real saves: 7 levels, Metadata → state_dict_metadata →
  TensorStorageMetadata → chunks → ChunkStorageMetadata → offsets → int);
- a cycle;
- a tree larger than `TREE_FACTOR` × the file's bytes + `TREE_SLACK` nodes (a node takes at
  least one byte of pickle unless the memo shares it; real saves share only `torch.Size` tuples
  between a chunk and its `MetadataIndex`: 1.2-1.6 nodes per byte, measured in tests/test_dcp.py);
- an integer wider than `MAX_INT_BITS` bits, a string longer than `MAX_STRING`.

`check_pickle_bytes` runs before unpickling: a pickle of one-byte opcodes that each push a new
empty dict (64 bytes), list (56) or set (216) would make 88-240 bytes of objects per byte of file
(9.5 MB of `}`: 672 MB measured). The bytes that could be such opcodes are counted (an upper
bound: the same bytes inside strings and integers count too) and their worst memory must stay
within `PICKLE_FACTOR` bytes per byte of file; real saves use ~1.3 (2% of their bytes).

`show` formats any value for a message within a fixed budget (reprlib), so a refused value can be
named without walking it. `check_extents` bounds each chunk's `(offset, length)` by its file and
by the bytes its shape and dtype can take.
"""

from __future__ import annotations

import reprlib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from normscope.errors import SourceError

MAX_DEPTH = 32
"""Nesting levels a `.metadata` may use (real saves use 7)."""
TREE_FACTOR = 4
TREE_SLACK = 4096
MAX_INT_BITS = 64
"""Every integer of DCP metadata is a size, an offset or a length: u64 at most."""
MAX_STRING = 1 << 20
"""Longest string (a tensor's fully qualified name, a file name): 1 MiB."""
MAX_DIMS = 64
"""Dimensions of a tensor shape (torch allows 64)."""
MAX_VALUE = 1 << 62
"""Largest shape entry, offset or length accepted (no file or tensor comes near it)."""
CHUNK_SLACK = 1 << 20
"""Bytes a chunk's `torch.save` blob may hold beyond its tensor's data (zip headers, pickle,
alignment: ~1-2 KB in torch 2.13; ZStandard's frame overhead is smaller still)."""

PICKLE_FACTOR = 4
PICKLE_SLACK = 4 << 20
_CONTAINER_COST = {b"}": 64, b"]": 56, b"\x8f": 216}
"""EMPTY_DICT, EMPTY_LIST, EMPTY_SET: the bytes of objects one opcode byte can push."""


def check_pickle_bytes(raw: bytes, where: str, what: str = "DCP metadata") -> None:
    """Refuse (SourceError), before unpickling, a pickle whose one-byte container opcodes could
    build more than PICKLE_FACTOR x its size in objects (see the module doc). `what` names the
    pickle in the message (DCP metadata, a state dict's `data.pkl`)."""
    worst = sum(raw.count(op) * cost for op, cost in _CONTAINER_COST.items())
    limit = PICKLE_FACTOR * len(raw) + PICKLE_SLACK
    if worst > limit:
        raise SourceError(
            f"invalid {what}: its {len(raw)} bytes could unpickle into {worst} bytes of "
            f"empty containers (at most {limit}): not a checkpoint's ({where})"
        )


_SHOW = reprlib.Repr()
_SHOW.maxlevel = 3
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 6
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlong = 40


def show(value: Any) -> str:
    """`repr(value)` within a fixed budget: safe on any unpickled value."""
    try:
        return _SHOW.repr(value)
    except Exception:  # a record whose repr fails: name its type only
        return f"<{type(value).__name__}>"


_LEAVES = (int, float, complex, bool, type(None), str, bytes, bytearray)
_LEAF_TYPES = frozenset(_LEAVES)
_CONTAINERS = frozenset((dict, list, tuple, set, frozenset))
_INT_BOUND = 1 << MAX_INT_BITS


def _children(obj: Any) -> Collection[Any] | None:
    """What `obj` refers to, or None for a leaf."""
    if isinstance(obj, _LEAVES):
        return None
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):  # a record stand-in (see unpickle._Record)
        return list(state.values())
    return None  # a stand-in function or a type: refers to nothing the pickle made


def _check_leaf(obj: Any, where: str) -> None:
    if isinstance(obj, int) and obj.bit_length() > MAX_INT_BITS:
        raise SourceError(
            f"invalid DCP metadata: an integer of {obj.bit_length()} bits (at most "
            f"{MAX_INT_BITS}) ({where})"
        )
    if isinstance(obj, (str, bytes, bytearray)) and len(obj) > MAX_STRING:
        raise SourceError(
            f"invalid DCP metadata: a string of {len(obj)} characters (at most {MAX_STRING}) "
            f"({where})"
        )


def _leaf_only(items: Iterable[Any], where: str) -> bool:
    """True when every item is a leaf (each checked); False at the first that is not."""
    for item in items:
        kind = type(item)
        if kind not in _LEAF_TYPES:
            return False
        if kind is int:
            if not -_INT_BOUND < item < _INT_BOUND:
                _check_leaf(item, where)
        elif kind is str and len(item) > MAX_STRING:
            _check_leaf(item, where)
    return True


def check_graph(root: Any, raw_bytes: int, where: str) -> None:
    """Refuse (SourceError) an unpickled `.metadata` that is too deep, cyclic, or whose tree
    is far larger than its file: see the module doc. Linear in the objects, never recursive;
    leaves (numbers, strings) are checked where they are met, never stacked."""
    limit = TREE_FACTOR * raw_bytes + TREE_SLACK
    sizes: dict[int, int] = {}
    """Tree size of each finished container, by id (the objects live as long as `root`)."""
    on_path: set[int] = set()
    if _children(root) is None:
        _check_leaf(root, where)
        return
    # A frame: the container, the tree size of what it holds that is known, what is pending.
    stack: list[tuple[Any, int, list[Any] | None]] = [(root, 0, None)]
    while stack:
        obj, known, pending = stack[-1]
        oid = id(obj)
        if pending is None:
            if oid in sizes:
                stack.pop()
                continue
            if len(on_path) >= MAX_DEPTH:
                raise SourceError(
                    f"invalid DCP metadata: nested more than {MAX_DEPTH} levels deep ({where})"
                )
            on_path.add(oid)
            known, pending = _expand(obj, sizes, on_path, where)
            stack[-1] = (obj, known, pending)
            stack.extend((kid, 0, None) for kid in pending)
            continue
        stack.pop()
        on_path.discard(oid)
        total = known + sum(sizes[id(k)] for k in pending)
        if total > limit:
            raise SourceError(
                f"invalid DCP metadata: its structure unfolds to more than {limit} values for "
                f"a {raw_bytes}-byte file (the pickle refers to the same parts again and again) "
                f"({where})"
            )
        sizes[oid] = total


def _expand(
    obj: Any, sizes: dict[int, int], on_path: set[int], where: str
) -> tuple[int, list[Any]]:
    """Open one container: check its leaves where they are met, count them and what is already
    sized; finish leaf-only children in place; the children that need a frame of their own."""
    known, pending = 1, []
    for kid in _children(obj) or ():
        kind = type(kid)
        if kind in _LEAF_TYPES:
            if kind is int:
                if not -_INT_BOUND < kid < _INT_BOUND:
                    _check_leaf(kid, where)
            elif kind is str and len(kid) > MAX_STRING:
                _check_leaf(kid, where)
            known += 1
            continue
        if kind in _CONTAINERS and not kid:  # an empty container holds nothing
            known += 1
            continue
        kid_id = id(kid)
        if kid_id in on_path:
            raise SourceError(f"invalid DCP metadata: a structure holds itself ({where})")
        done = sizes.get(kid_id)
        if done is not None:
            known += done
            continue
        grand = _children(kid)
        if grand is None:
            _check_leaf(kid, where)
            known += 1
        elif len(on_path) < MAX_DEPTH and _leaf_only(grand, where):
            # Finished here, without a frame: most containers hold only leaves.
            sizes[kid_id] = done = 1 + len(grand)
            known += done
        else:
            pending.append(kid)
    return known, pending


def check_extents(
    chunks: Iterable[tuple[str, str, int, int, int | None]],
    file_sizes: Mapping[str, int],
    where: str,
) -> None:
    """Each `(what, file, offset, length, data_bytes)` must lie inside its file and hold at
    most its data (`data_bytes`: shape x dtype, None for a byte item) plus `CHUNK_SLACK`."""
    for what, file, offset, length, data_bytes in chunks:
        size = file_sizes.get(file, 0)
        if length <= 0 or offset + length > size:
            raise SourceError(
                f"invalid DCP metadata: {what} is bytes {offset}..{offset + length} of "
                f"{file}, which has {size} bytes ({where})"
            )
        if data_bytes is not None and length > data_bytes + CHUNK_SLACK:
            raise SourceError(
                f"invalid DCP metadata: {what} takes {length} bytes of {file} for "
                f"{data_bytes} bytes of tensor data ({where})"
            )
