"""Where snapshot bytes go: a local file or an S3 multipart upload."""

from heapsnap.sinks.base import Artifact, Sink

__all__ = ["Artifact", "Sink"]
