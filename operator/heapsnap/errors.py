"""Every failure heapsnap reports, with one reason and one message for all its surfaces.

The CLI prints ``str(error)`` on one line, the operator copies ``reason`` into the
``Ready`` condition and the Warning Event, and ``message`` into both. A message is a
sentence that names what was wrong and what to do about it.

HeapsnapError
 ├── InvalidInput                 a flag or spec field is wrong; fixing the input fixes it
 ├── TargetError                  the process to capture
 │    ├── ProcessNotFound
 │    ├── NotNodeProcess
 │    ├── AmbiguousProcess
 │    ├── WorkerNotFound          no worker thread with the threadId asked for
 │    ├── TargetExited            the process went away during the capture
 │    └── PodError                pod or container missing, not running, restarted
 ├── ActivationError              reaching the process's inspector or snapshot signal
 │    ├── InspectorDisabled       --disable-sigusr1, or activation refused
 │    ├── InspectorPortTaken      the inspector could not bind its port
 │    ├── InspectorUnreachable
 │    ├── SignalNotHandled        no --heapsnapshot-signal: sending it would kill node
 │    └── DiagnosticDirNotWritable
 ├── PreflightRefused             not enough memory headroom for the snapshot
 ├── CaptureError                 the snapshot itself failed or was cut short
 │    └── CaptureTimeout
 ├── StorageError                 the sink
 │    ├── BucketNotFound
 │    ├── StorageAccessDenied
 │    └── UploadFailed
 ├── SnapshotFormatError          a file that is not a (complete, supported) heap snapshot
 └── TransportError               the API server's exec or port-forward stream broke
"""

from __future__ import annotations

__all__ = [
    "ActivationError",
    "AmbiguousProcess",
    "BucketNotFound",
    "CaptureError",
    "CaptureTimeout",
    "DiagnosticDirNotWritable",
    "HeapsnapError",
    "InspectorDisabled",
    "InspectorPortTaken",
    "InspectorUnreachable",
    "InvalidInput",
    "NotNodeProcess",
    "PodError",
    "PreflightRefused",
    "ProcessNotFound",
    "SignalNotHandled",
    "SnapshotFormatError",
    "StorageAccessDenied",
    "StorageError",
    "TargetError",
    "TargetExited",
    "TransportError",
    "UploadFailed",
    "WorkerNotFound",
]


class HeapsnapError(Exception):
    """Base of every error heapsnap raises on purpose.

    ``reason`` is a CamelCase word for conditions and Events; subclasses set a default
    and a caller may refine it (``PodError("...", reason="ContainerNotFound")``).
    ``retryable`` tells the operator whether trying again later may help.
    """

    reason: str = "Failed"
    retryable: bool = False

    def __init__(self, message: str, *, reason: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class InvalidInput(HeapsnapError):
    reason = "InvalidSpec"


class TargetError(HeapsnapError):
    reason = "TargetError"


class ProcessNotFound(TargetError):
    reason = "ProcessNotFound"


class NotNodeProcess(TargetError):
    reason = "NotNodeProcess"


class AmbiguousProcess(TargetError):
    reason = "AmbiguousProcess"


class WorkerNotFound(TargetError):
    reason = "WorkerNotFound"


class TargetExited(TargetError):
    reason = "TargetExited"


class PodError(TargetError):
    reason = "PodNotFound"


class ActivationError(HeapsnapError):
    reason = "ActivationFailed"


class InspectorDisabled(ActivationError):
    reason = "InspectorDisabled"


class InspectorPortTaken(ActivationError):
    reason = "InspectorPortTaken"


class InspectorUnreachable(ActivationError):
    reason = "InspectorUnreachable"
    retryable = True


class SignalNotHandled(ActivationError):
    reason = "SignalNotHandled"


class DiagnosticDirNotWritable(ActivationError):
    reason = "DiagnosticDirNotWritable"


class NoScratchSpace(ActivationError):
    reason = "NoScratchSpace"


class PreflightRefused(HeapsnapError):
    reason = "InsufficientMemory"


class CaptureError(HeapsnapError):
    reason = "CaptureFailed"


class CaptureTimeout(CaptureError):
    reason = "CaptureTimeout"


class StorageError(HeapsnapError):
    reason = "StorageFailed"


class BucketNotFound(StorageError):
    reason = "BucketNotFound"


class StorageAccessDenied(StorageError):
    reason = "StorageAccessDenied"


class UploadFailed(StorageError):
    reason = "UploadFailed"
    retryable = True


class SnapshotFormatError(HeapsnapError):
    reason = "InvalidSnapshot"


class TransportError(HeapsnapError):
    reason = "TransportFailed"
    retryable = True
