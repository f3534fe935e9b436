"""The exceptions of fedotp: one base class, ``fedotp.Error``, and a subclass per kind of
libfedotp status (``fedotp.h``'s ``FEDOTP_ERR_*``), each carrying the library's message.

Subclasses also derive from the built-in exception a Python programmer would expect
(``ValueError`` for a bad argument, ``TypeError`` for a wrong dtype, ``OSError`` for a file,
``MemoryError``), so ``except ValueError`` works as usual.
"""

from typing import Dict, Optional, Type

from . import _fedotp


class Error(Exception):
    """Any failure of libfedotp. ``status`` is the C status code (``None`` for problems found
    by the Python layer before calling it), ``status_name`` its ``FEDOTP_ERR_*`` name."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.status_name = _NAMES.get(status) if status is not None else None


class InvalidArgument(Error, ValueError):
    """An argument out of its range: an empty dimension, a solver parameter, a setting, a class
    name, a label, an image's stride or window."""


class WrongDType(Error, TypeError):
    """A NumPy array of another dtype than libfedotp reads (float32 values, uint8 / uint16
    pixels), or not an array at all."""


class NonContiguous(InvalidArgument):
    """An array whose memory layout libfedotp cannot read without a copy."""


class ShapeMismatch(InvalidArgument):
    """An array, prompt or message of another shape than expected."""


class NonFinite(InvalidArgument):
    """A NaN or infinite input value (or nothing finite was learned)."""


class BadMessage(Error, ValueError):
    """Bytes that are not a valid message of the expected kind (truncated, corrupted, another
    version or kind, trailing bytes); the message names the field and byte offset."""


class AggregationError(Error, ValueError):
    """An update the aggregator refuses (another round, zero weight, a client counted twice, a
    full round) or an average with no update."""


class NotTrained(Error):
    """The client has not trained since its last global prompt: there is no update to send."""


class Cancelled(Error):
    """Training was cancelled (the progress callback raised, or Ctrl-C); the client is as
    before the call. The exception that caused it is ``__cause__``."""


class StateMismatch(Error, ValueError):
    """A saved client state of another model, other class names or another n_ctx."""


class FormatError(Error, ValueError):
    """A file that is not what it should be: a CLIP weights file, a client state."""


class ImageDecode(InvalidArgument):
    """Encoded bytes that are not a decodable JPEG or PNG."""


class Device(Error):
    """The compute device failed during a call (a CUDA error, out of GPU memory)."""


class UnsupportedDevice(Device, ValueError):
    """Not a device name, or a device this build or machine does not have."""


class IoError(Error, OSError):
    """A file that could not be read or written."""


class OutOfMemory(Error, MemoryError):
    """Memory for the computation could not be allocated."""


class Internal(Error):
    """A bug in libfedotp or in these bindings (a caught panic, a bad handle); please report it."""


class Busy(Error, RuntimeError):
    """A call on a client or image set from inside its own training's progress callback."""


#: The class of every status, by its C name; anything unnamed is ``InvalidArgument``.
_CLASSES: Dict[str, Type[Error]] = {
    "FEDOTP_ERR_PANIC": Internal,
    "FEDOTP_ERR_NULL_POINTER": Internal,
    "FEDOTP_ERR_ALIASED_BUFFERS": Internal,
    "FEDOTP_ERR_INVALID_HANDLE": Internal,
    "FEDOTP_ERR_WRONG_HANDLE_TYPE": Internal,
    "FEDOTP_ERR_HANDLE_BUSY": Busy,
    "FEDOTP_ERR_OUT_OF_MEMORY": OutOfMemory,
    "FEDOTP_ERR_NON_FINITE": NonFinite,
    "FEDOTP_ERR_SHAPE_MISMATCH": ShapeMismatch,
    "FEDOTP_ERR_MESSAGE_TRUNCATED": BadMessage,
    "FEDOTP_ERR_BAD_MAGIC": BadMessage,
    "FEDOTP_ERR_UNSUPPORTED_VERSION": BadMessage,
    "FEDOTP_ERR_UNKNOWN_KIND": BadMessage,
    "FEDOTP_ERR_WRONG_KIND": BadMessage,
    "FEDOTP_ERR_LENGTH_MISMATCH": BadMessage,
    "FEDOTP_ERR_TRAILING_BYTES": BadMessage,
    "FEDOTP_ERR_CHECKSUM_MISMATCH": BadMessage,
    "FEDOTP_ERR_RESERVED_NOT_ZERO": BadMessage,
    "FEDOTP_ERR_ACCURACY_OUT_OF_RANGE": BadMessage,
    "FEDOTP_ERR_ROUND_MISMATCH": AggregationError,
    "FEDOTP_ERR_ZERO_WEIGHT": AggregationError,
    "FEDOTP_ERR_DUPLICATE_CLIENT": AggregationError,
    "FEDOTP_ERR_CLIENT_LIST_FULL": AggregationError,
    "FEDOTP_ERR_NO_UPDATES": AggregationError,
    "FEDOTP_ERR_IO": IoError,
    "FEDOTP_ERR_MODEL_FORMAT": FormatError,
    "FEDOTP_ERR_STATE_FORMAT": FormatError,
    "FEDOTP_ERR_IMAGE_DECODE": ImageDecode,
    "FEDOTP_ERR_UNSUPPORTED_DEVICE": UnsupportedDevice,
    "FEDOTP_ERR_DEVICE": Device,
    "FEDOTP_ERR_CANCELLED": Cancelled,
    "FEDOTP_ERR_NOT_TRAINED": NotTrained,
    "FEDOTP_ERR_STATE_MISMATCH": StateMismatch,
}

_NAMES: Dict[int, str] = {code: name for name, code in _fedotp.STATUS_CODES.items()}


def from_status(status: int, message: str) -> Error:
    """The exception for a libfedotp status and its message (used by the compiled module)."""
    name = _NAMES.get(status, "")
    return _CLASSES.get(name, InvalidArgument)(message, status)
