"""S3 clients: botocore's client machinery, loaded only when a client is made.

Importing it takes ~0.15 s that the CLI spends probing the target instead (see
``heapsnap.cli.capture``). The client is botocore's own, which boto3's ``client()``
returns too; boto3's extra layer (resources, s3transfer) is not used.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, cast

import botocore.config
import botocore.loaders
import botocore.session

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from heapsnap.sinks.s3 import S3Config


class _SlimLoader(botocore.loaders.Loader):
    """botocore's data, less what heapsnap's clients never read: ~7 MiB less RSS.

    ``endpoints`` describes every AWS service in every region (6.8 MiB as Python
    objects); S3 clients read S3's entry, and credential providers STS's. Service models
    carry their documentation, which only ``help()`` shows: its texts are emptied. The
    other services are not even listed.
    """

    KEPT_SERVICES = frozenset({"s3", "sts"})

    def __init__(self) -> None:
        super().__init__()
        self._slimmed: set[str] = set()
        self._lock = threading.Lock()  # clients are made on worker threads

    def list_available_services(self, type_name: str) -> list[str]:
        # botocore lists the data directory of all ~400 services (30 ms) to check the
        # name of the one asked for; heapsnap's clients ask for these only.
        del type_name
        return sorted(self.KEPT_SERVICES)

    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        data, path = super().load_data_with_path(name)  # cached by botocore: slim it once
        with self._lock:
            if name not in self._slimmed:
                self._slimmed.add(name)
                if name == "endpoints":
                    for partition in data.get("partitions", []):
                        services = partition.get("services", {})
                        partition["services"] = {k: v for k, v in services.items() if k in self.KEPT_SERVICES}
                elif name.endswith("/service-2"):
                    _drop_documentation(data)
        return data, path


def _drop_documentation(node: Any) -> None:
    """Empty every documentation text (botocore reads some of the keys, so they stay)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("documentation", "documentationUrl") and isinstance(value, str):
                node[key] = ""
            else:
                _drop_documentation(value)
    elif isinstance(node, list):
        for value in node:
            _drop_documentation(value)


@functools.cache
def _loader() -> botocore.loaders.Loader:
    return _SlimLoader()


def make_client(config: S3Config) -> S3Client:
    # One loader for every client: loading S3's service model is most of the ~80 ms a new
    # client costs, and the operator makes one per capture. Credentials stay per session
    # (None: botocore's standard chain, as boto3's). The loader is slimmed, too.
    session = botocore.session.get_session()
    session.register_component("data_loader", _loader())
    client = session.create_client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        aws_session_token=config.session_token,
        config=botocore.config.Config(
            s3={"addressing_style": "path" if config.force_path_style else "auto"},
            retries={"max_attempts": 4, "mode": "standard"},
            # Only where required: many S3-compatible servers reject the newer default checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    _send_in_large_blocks(client)
    return cast("S3Client", client)


#: urllib3 sends a body read from a file in blocks of its pool's ``blocksize``, which
#: botocore sets to 128 KiB. Parts are 8 MiB: sending them 1 MiB at a time takes ~0.07 s
#: less CPU per 400 MiB uploaded (measured against versitygw on loopback).
SEND_BLOCK = 1 << 20


def _send_in_large_blocks(client: Any) -> None:
    # botocore offers no setting for it: its connection pools are made from these keywords.
    # Where they are not there (another botocore), uploads work as they would anyway.
    manager = getattr(getattr(client._endpoint, "http_session", None), "_manager", None)
    keywords = getattr(manager, "connection_pool_kw", None)
    if isinstance(keywords, dict) and keywords.get("blocksize", SEND_BLOCK) < SEND_BLOCK:
        keywords["blocksize"] = SEND_BLOCK
