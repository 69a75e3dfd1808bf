"""Reading pickles from the internet without running them: plain data and numpy values only.

Official UNETR++ weights are nnU-Net v1 files: ``model_final_checkpoint.model`` (``torch.save``) and
its sibling ``.model.pkl`` (a plain pickle). A pickle can name any importable callable and call it
while loading (``os.system`` via ``__reduce__``), so both are read with allow-lists:

* ``torch_numpy_allowlist()`` feeds ``torch.serialization.safe_globals`` for ``torch.load(...,
  weights_only=True)``: exactly the numpy globals that numpy scalars and small arrays in a training
  log (``plot_stuff``) reconstruct with.
* ``load_plain_pickle(path)`` uses an ``Unpickler`` whose ``find_class`` accepts only builtin
  containers and scalars, ``collections.OrderedDict``/``defaultdict`` and the same numpy
  reconstruction functions. Anything else stops the load before the named object is even looked up.
  Plain data can still be a memory bomb (``bytes(4_000_000_000)`` is 26 bytes of pickle), so every
  allowed constructor that allocates in proportion to its arguments charges one budget per file, and
  ``numpy.ndarray`` can only be rebuilt through ``_reconstruct``, which charges the array's size.

Files written with numpy 1.x name ``numpy.core.multiarray``; numpy 2.x renamed it ``numpy._core``.
Both spellings are accepted and mapped onto the functions of the numpy that is installed, without
importing the deprecated ``numpy.core`` shim.
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from unetrpp.errors import CheckpointError, UnsafeCheckpointError

__all__ = ["torch_numpy_allowlist", "load_plain_pickle"]

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

_MULTIARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")

# dtype characters of plain numeric, boolean and string data (no object, void or datetime types).
_PLAIN_DTYPE_CHARS = "?bBhHiIlLqQefdgFDGUS"


def _plain_dtype_classes() -> list[type]:
    """``numpy.dtypes.Float64DType`` and friends; unpickling a dtype sets its state on an instance of
    its class, so a loader that checks types needs these classes (numpy >= 1.25 has one per type)."""
    classes: list[type] = []
    for char in _PLAIN_DTYPE_CHARS:
        cls = type(np.dtype(char))
        if cls not in classes:
            classes.append(cls)
    return classes


def _numpy_globals() -> dict[str, Any]:
    """Full dotted name -> object for every numpy global a plain-data pickle may reference."""
    allowed: dict[str, Any] = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray}
    for module in _MULTIARRAY_MODULES:
        allowed[f"{module}.scalar"] = _multiarray.scalar
        allowed[f"{module}._reconstruct"] = _multiarray._reconstruct
    for cls in _plain_dtype_classes():
        allowed[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return allowed


def torch_numpy_allowlist() -> list[Any]:
    """Entries for ``torch.serialization.safe_globals`` covering numpy scalars, dtypes and arrays.

    Each entry is ``(object, "dotted.name")`` so that files written with numpy 1.x
    (``numpy.core.multiarray.scalar``) resolve to the installed numpy's function.
    """
    return [(obj, name) for name, obj in _numpy_globals().items()]


# Builtins a data pickle legitimately uses. ``_codecs.encode`` is how protocol 2 stores bytes (numpy
# scalars carry their raw value as bytes); it only converts text.
_PLAIN_GLOBALS: dict[str, Any] = {
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "builtins.bytearray": bytearray,
    "builtins.bytes": bytes,
    "builtins.slice": slice,
    "builtins.range": range,
    "builtins.list": list,
    "builtins.dict": dict,
    "builtins.tuple": tuple,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.str": str,
    "builtins.bool": bool,
    "collections.OrderedDict": collections.OrderedDict,
    "collections.defaultdict": collections.defaultdict,
    "_codecs.encode": _codecs.encode,
}
# Pickle protocol 5 stores array data out of band and rebuilds it with numpy's _frombuffer (pure data).
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _PLAIN_GLOBALS[f"{_module}._frombuffer"] = _numeric._frombuffer


# A plans pickle is a few kilobytes; these bounds are far above any real one.
_MAX_PICKLE_BYTES = 64 << 20
_MAX_ALLOCATED_BYTES = 256 << 20
_SIZED_CONSTRUCTORS = ("bytes", "bytearray", "list", "tuple", "set", "frozenset")
_NDARRAY = object()  # stands for numpy.ndarray: an argument of _reconstruct, never a callable


class _Budget:
    """Bytes the constructors of one pickle may still allocate; exceeding it refuses the file."""

    def __init__(self, source: Path) -> None:
        self._source = source
        self._left = _MAX_ALLOCATED_BYTES

    def charge(self, nbytes: int, what: str) -> None:
        self._left -= max(int(nbytes), 0)
        if self._left < 0:
            raise UnsafeCheckpointError(
                f"refused to load {self._source}: it asks for more than {_MAX_ALLOCATED_BYTES >> 20} MB of "
                f"memory ({what}), which no plans file needs (a tampered or damaged file; nothing was run)"
            )

    def sized(self, constructor: type) -> Any:
        """``constructor`` charging what its arguments make it allocate (``bytes(N)``, ``list(range(N))``)."""

        def build(*args: Any) -> Any:
            for arg in args:
                if isinstance(arg, int):
                    self.charge(arg, f"{constructor.__name__}({arg})")
                elif isinstance(arg, (range, str, bytes, bytearray, list, tuple, set, frozenset, dict)):
                    self.charge(len(arg) * 8, f"{constructor.__name__} of {len(arg)} items")
            return constructor(*args)

        return build

    def reconstruct(self, cls: Any, shape: Any, dtype: Any) -> Any:
        """numpy's ``_reconstruct``, charging the array it creates."""
        if cls is not _NDARRAY:
            raise UnsafeCheckpointError(f"refused to load {self._source}: it rebuilds an array of {cls!r}")
        count = 1
        for size in shape if isinstance(shape, tuple) else (shape,):
            count *= int(size)
        self.charge(count * np.dtype(dtype).itemsize, f"an array of shape {shape}")
        return _multiarray._reconstruct(np.ndarray, shape, dtype)

    def scalar(self, dtype: np.dtype, *args: Any) -> Any:
        self.charge(dtype.itemsize, f"a scalar of {dtype.itemsize} bytes")
        return _multiarray.scalar(dtype, *args)


class _PlainDataUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: Path) -> None:
        super().__init__(file)
        self._source = source
        budget = _Budget(source)
        self._allowed = {**_PLAIN_GLOBALS, **_numpy_globals(), "numpy.ndarray": _NDARRAY}
        for name in _SIZED_CONSTRUCTORS:
            self._allowed[f"builtins.{name}"] = budget.sized(_PLAIN_GLOBALS[f"builtins.{name}"])
        for module in _MULTIARRAY_MODULES:
            self._allowed[f"{module}._reconstruct"] = budget.reconstruct
            self._allowed[f"{module}.scalar"] = budget.scalar

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 writes Python 2 names (__builtin__.set); map them as pickle's own find_class does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        dotted = f"{module}.{name}"
        if dotted not in self._allowed:
            raise UnsafeCheckpointError(
                f"refused to load {self._source}: it asks to run '{dotted}', which is not plain data "
                "(a tampered or foreign file; nothing was executed)"
            )
        return self._allowed[dotted]


def load_plain_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only plain data (builtins, OrderedDict/defaultdict, numpy values).

    Raises:
        UnsafeCheckpointError: the pickle references any other callable (it is refused before that
            callable is imported or run), or asks its constructors for more memory than plans need.
        CheckpointError: the file is not a pickle, is truncated, or is far too large.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > _MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{path} is {size >> 20} MB; a plans pickle has a few kilobytes (not a plans file)"
        )
    try:
        with path.open("rb") as file:
            return _PlainDataUnpickler(file, path).load()
    except UnsafeCheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        RecursionError,
        OverflowError,
    ) as e:
        raise CheckpointError(
            f"{path} is not a readable plans pickle (truncated or another format): {e}"
        ) from e
