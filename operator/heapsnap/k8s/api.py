"""Connection to the API server: kubeconfig or in-cluster credentials, like kubectl.

The blocking ``kubernetes`` client is used for plain REST calls, always from a thread
(``call``); the streaming paths (exec, port-forward) use ``websockets`` with the TLS
context and headers built here from the same configuration.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from heapsnap.errors import InvalidInput

T = TypeVar("T")

# The default executor has cpu+4 threads (6 here); kopf and 20 concurrent captures
# polling their pods would queue behind each other.
_EXECUTOR = ThreadPoolExecutor(max_workers=24, thread_name_prefix="heapsnap-k8s")


def load_configuration(kubeconfig: str | None = None) -> Any:
    """A ``kubernetes.client.Configuration`` from ``kubeconfig``, ``$KUBECONFIG`` or the service account."""
    cfg = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        if path or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        where = path or "~/.kube/config"
        raise InvalidInput(
            f"No usable Kubernetes credentials ({where}: {error}); set KUBECONFIG to a valid kubeconfig "
            "or run inside a pod with a service account."
        ) from None
    return cfg


@dataclass
class ApiConnection:
    """What every API call needs: a REST client and the pieces of a websocket handshake."""

    configuration: Any

    @functools.cached_property
    def api_client(self) -> Any:
        return client.ApiClient(self.configuration)

    @functools.cached_property
    def core(self) -> Any:
        """Only for tools: the operator's few core reads go through ``get`` (CoreV1Api's
        module alone costs ~23 MiB of RSS and its first use ~0.5 s)."""
        return client.CoreV1Api(self.api_client)

    @functools.cached_property
    def custom(self) -> Any:
        return client.CustomObjectsApi(self.api_client)

    @functools.cached_property
    def coordination(self) -> Any:
        return client.CoordinationV1Api(self.api_client)

    def warm_up(self) -> None:
        """Build the operator's API classes now, not when the first capture waits for them."""
        for name in ("custom", "coordination"):
            getattr(self, name)

    def get(self, path: str, response_type: str, **query: str) -> Any:
        """GET ``path`` (``/api/v1/...``) as a ``response_type`` model (``"V1Pod"``);
        failures raise ``ApiException`` as the generated clients do. Blocking: use ``call``."""
        url = self.server + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", **self.auth_headers()}
        response = self.api_client.call_api("GET", url, header_params=headers)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return self.api_client.deserialize(response.data.decode(), response_type, "application/json")

    @property
    def server(self) -> str:
        return str(self.configuration.host).rstrip("/")

    def websocket_url(self, path: str) -> str:
        base = self.server
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        return base + path

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.configuration
        if not self.server.startswith("https://"):
            return None
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def auth_headers(self) -> dict[str, str]:
        """Bearer token headers, refreshed first through the config's hook (exec plugins, SA tokens)."""
        cfg = self.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
        if not token and cfg.username and cfg.password:
            token = cfg.get_basic_auth_token()
        return {"Authorization": token} if token else {}

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking client call in a thread so the event loop never stalls."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_EXECUTOR, functools.partial(fn, *args, **kwargs))


def connect(kubeconfig: str | None = None) -> ApiConnection:
    return ApiConnection(load_configuration(kubeconfig))
