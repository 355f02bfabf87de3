"""One exception hierarchy: every message says what was wrong, where, and what is valid."""

import reprlib


def shown(value) -> str:
    """A bounded repr for messages: an error never carries a huge value (an alias-bomb list, a long text)."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = 80
    r.maxlist = r.maxdict = 6
    return r.repr(value)


class SoftpickBenchError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(SoftpickBenchError):
    """A sweep config is malformed; raised before any model is loaded."""


class CheckpointError(SoftpickBenchError):
    """A checkpoint cannot be loaded or converted as asked."""


class PairMismatchError(CheckpointError):
    """Two checkpoints of a pair differ in more than attention."""


class UnsupportedQuantError(SoftpickBenchError):
    """A quantizer cannot apply this spec (bits, device, option); the plan lists the cell as skipped."""


class QuantizationNoOpError(SoftpickBenchError):
    """A quantizer ran but changed nothing: never a result."""


class TaskError(SoftpickBenchError):
    """An evaluation task is unknown or its data is missing."""


class StoreError(SoftpickBenchError):
    """The results folder cannot be read or written (a file in its place, read-only, disk full)."""


class TransformError(SoftpickBenchError):
    """A model transform (rotation, smoothing) changed the model's function: never a result."""
