"""Caches bounded by bytes, shared by every session: `ByteLRU` (no streamlit here; `viz.app.cache` wraps it).

Why not `st.cache_data(max_entries=64)`: entries are not the unit that fills a machine. One capture of a
420-word text on MiniLM is ~95 MB (attention weights alone: 6 layers x 12 heads x 512 x 512 float32 =
75 MB) and st.cache_data keeps it pickled *and* unpickles a fresh copy for every rerun of every session:
64 of those is 12 GB. Here every entry is counted by the bytes its arrays hold and the least recently
used entries go once the budget (`VIZ_CACHE_MB`, default 768) is exceeded.

Isolation between sessions without copies: a stored value's numpy arrays are made read-only (through a
read-only base, so `flags.writeable = True` cannot undo it), and every reader gets its own copy of the
containers around them (dataclasses, lists, dicts), so one session can neither write into the arrays
another session draws nor swap a list or a dict entry under it. This is what `st.cache_data`'s
copy-per-reader gave, minus the copy.

Computations are single-flight: two sessions asking for the same key at once run it once.
Exceptions are never stored.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

import numpy as np

MB = 1 << 20
DEFAULT_CACHE_MB = 768  # results (captures, flows, generations, ...): RSS grows by about this + 0.4 GB (README)
DEFAULT_MODEL_CACHE_MB = 4096  # loaded models
_MISSING = object()


def budget_from_env(var: str, default_mb: int) -> int:
    """Bytes from an environment variable in MB (a positive number); the default when unset or invalid."""
    raw = os.environ.get(var, "").strip()
    try:
        mb = float(raw) if raw else float(default_mb)
    except ValueError:
        mb = float(default_mb)
    return int(max(mb, 0.0) * MB)


# ----------------------------------------------------------------------------- sizes
def nbytes(obj: Any, _seen: set | None = None, *, deep_objects: bool = True) -> int:
    """Bytes held by `obj`: numpy arrays (their base counted once), torch tensors, strings, and what
    dataclasses, dicts, lists, tuples and sets contain. Small Python overhead is counted roughly.
    `deep_objects=False`: other objects (a model, a tokenizer) count as nothing instead of their attributes."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        if base is not obj:
            if id(base) in seen:
                return 0
            seen.add(id(base))
        return int(base.nbytes) + 112
    if obj is None or isinstance(obj, (bool, int, float, complex, np.generic)):
        return 32
    if isinstance(obj, (str, bytes, bytearray)):
        return sys.getsizeof(obj)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return int(obj.untyped_storage().nbytes()) + 112
    deep = {"deep_objects": deep_objects}
    if isinstance(obj, dict):
        return 64 + sum(nbytes(k, seen, **deep) + nbytes(v, seen, **deep) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return 56 + sum(nbytes(x, seen, **deep) for x in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return 64 + sum(nbytes(getattr(obj, f.name), seen, **deep) for f in dataclasses.fields(obj))
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        return int(obj.memory_usage(deep=True).sum()) if isinstance(obj, pd.DataFrame) else int(
            obj.memory_usage(deep=True))
    if deep_objects and hasattr(obj, "__dict__"):
        return 64 + nbytes(vars(obj), seen)
    return sys.getsizeof(obj)


def model_nbytes(model) -> int:
    """Parameters and buffers of a torch module (tied weights counted once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


# ----------------------------------------------------------------------------- read-only sharing
def freeze(obj: Any) -> Any:
    """Make every numpy array reachable from `obj` read-only, in place; returns `obj`.

    An array that owns its memory could be made writeable again, so each one is replaced by a
    read-only view, and the array that owns the memory is made read-only too (numpy then refuses
    `writeable = True` on the view)."""
    return _walk(obj, _frozen_array, copy_containers=False)


def isolated(obj: Any) -> Any:
    """A reader's own copy of the containers in a frozen value; arrays (read-only) are shared."""
    return _walk(obj, lambda a: a, copy_containers=True)


def _frozen_array(a: np.ndarray) -> np.ndarray:
    root = a
    while isinstance(root.base, np.ndarray):  # numpy lets a view be made writeable while its owner is
        root = root.base
    if root is not a and not root.flags.writeable and not a.flags.writeable:
        return a  # frozen already
    root.flags.writeable = False
    a.flags.writeable = False
    view = a.view()
    view.flags.writeable = False
    return view


def _walk(obj: Any, on_array: Callable[[np.ndarray], np.ndarray], copy_containers: bool) -> Any:
    if isinstance(obj, np.ndarray):
        return on_array(obj)
    if isinstance(obj, list):
        out = [_walk(x, on_array, copy_containers) for x in obj]
        if copy_containers:
            return out
        obj[:] = out
        return obj
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_walk(x, on_array, copy_containers) for x in obj)
    if isinstance(obj, dict):
        out = {k: _walk(v, on_array, copy_containers) for k, v in obj.items()}
        if copy_containers:
            return out
        obj.update(out)
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        target = copy.copy(obj) if copy_containers else obj
        for f in dataclasses.fields(obj):
            object.__setattr__(target, f.name, _walk(getattr(obj, f.name), on_array, copy_containers))
        return target
    pd = sys.modules.get("pandas")
    if copy_containers and pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        return obj.copy(deep=False)  # pandas >= 3 is copy-on-write: a write never reaches the shared data
    return obj


# ----------------------------------------------------------------------------- the cache
class ByteLRU:
    """A thread-safe LRU mapping bounded by the bytes of its values.

    `share=True` (results): values are frozen when stored and each reader gets `isolated()` containers.
    `share=False` (models): values are handed out as they are. `keep_oversized`: a value larger than the
    whole budget is still kept (alone) rather than recomputed on every call -- right for a model,
    whose reload takes seconds; wrong for results, which are then returned without being stored.
    """

    def __init__(self, budget: int, *, sizer: Callable[[Any], int] = nbytes, share: bool = True,
                 keep_oversized: bool = False, on_evict: Callable[[Hashable, Any], None] | None = None) -> None:
        self.budget = int(budget)
        self._sizer, self._share, self._keep_oversized, self._on_evict = sizer, share, keep_oversized, on_evict
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, threading.Lock] = {}
        self.hits = self.misses = self.evictions = 0

    # -- reading
    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            item = self._items.get(key, _MISSING)
            if item is _MISSING:
                return default
            self._items.move_to_end(key)
            self.hits += 1
        return isolated(item[0]) if self._share else item[0]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list:
        with self._lock:
            return list(self._items)

    # -- writing
    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The stored value, or `compute()` run once however many threads ask at the same time."""
        value = self.get(key, _MISSING)
        if value is not _MISSING:
            return value
        with self._lock:
            gate = self._inflight.setdefault(key, threading.Lock())
        with gate:
            value = self.get(key, _MISSING)  # another thread may have finished it while we waited
            if value is not _MISSING:
                return value
            try:
                with self._lock:
                    self.misses += 1
                value = compute()
                return self.put(key, value)
            finally:
                with self._lock:
                    if self._inflight.get(key) is gate:
                        del self._inflight[key]

    def put(self, key: Hashable, value: Any) -> Any:
        """Store `value` (evicting least recently used entries to fit); returns what a reader gets."""
        if self._share:
            value = freeze(value)
        size = int(self._sizer(value))
        evicted = []
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size <= self.budget or self._keep_oversized:
                self._items[key] = (value, size)
                self._bytes += size
            # oldest first; the entry just stored is the newest, so it is never the one evicted
            while self._bytes > self.budget and len(self._items) > (1 if key in self._items else 0):
                k, (v, s) = self._items.popitem(last=False)
                self._bytes -= s
                self.evictions += 1
                evicted.append((k, v))
        for k, v in evicted:
            if self._on_evict is not None:
                self._on_evict(k, v)
        return isolated(value) if self._share else value

    def clear(self) -> None:
        with self._lock:
            evicted = list(self._items.items())
            self._items.clear()
            self._bytes = 0
        for k, (v, _) in evicted:
            if self._on_evict is not None:
                self._on_evict(k, v)

    def stats(self) -> dict:
        with self._lock:
            return {"entries": len(self._items), "bytes": self._bytes, "budget": self.budget, "hits": self.hits,
                    "misses": self.misses, "evictions": self.evictions}
