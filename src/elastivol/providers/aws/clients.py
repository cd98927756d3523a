"""AWS clients (botocore, the layer under boto3's clients) for the aws provider: adaptive retries, timeouts, metrics and the caller's event hooks.

Endpoints and credentials follow boto3's standard chain, so ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_EC2`` / ``_EFS``), IRSA's ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``,
static keys and instance profiles all work without a flag of our own.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol

import botocore.loaders
import botocore.session
from botocore.config import Config

from elastivol import __version__
from elastivol.providers.aws.awsmetrics import AwsMetrics, remember_model
from elastivol.providers.aws.settings import AwsSettings

# botocore's EC2 model, parsed, holds ~25 MiB and its endpoints.json ~4.5 MiB; elastivol ships trimmed
# copies with only the operations it calls and the services it talks to (scripts/trim_botodata.py;
# tests/aws/test_trimmed_botodata.py checks they cover every call). They are found through this loader's
# search path, ahead of botocore's own data and any AWS_DATA_PATH, and are used only by elastivol's
# clients: the process environment is not touched.
BOTO_DATA = Path(__file__).resolve().parent / "botodata"
_LOADER = botocore.loaders.create_loader(
    os.pathsep.join(p for p in (str(BOTO_DATA), os.environ.get("AWS_DATA_PATH", "")) if p)
)


class EventHooks(Protocol):
    """Registers handlers on botocore's event emitter, so that every client's calls pass through them
    (the test support package's fault layer is one)."""

    def install(self, events: Any) -> None: ...


class AwsClients:
    def __init__(self, settings: AwsSettings, metrics: AwsMetrics | None = None, hooks: EventHooks | None = None,
                 region: str = "") -> None:
        core = botocore.session.get_session()
        # One loader per process: EC2's API model is large, and parsing it again for every session
        # (each test makes one) costs a second.
        core.register_component("data_loader", _LOADER)
        # Hooks go on the session so that every client made from it, including the STS client that
        # resolves web identity credentials, carries them.
        events = core.get_component("event_emitter")
        events.register("before-parameter-build", remember_model, unique_id="elastivol-model")
        if metrics is not None:
            metrics.install(events)
        if hooks is not None:
            hooks.install(events)
        self.settings = settings
        self.region = region or settings.region or None
        # Clients come from botocore's session directly: boto3's Session adds nothing a client uses
        # (its extras serve resources and S3 transfers) and costs ~2 MiB to import.
        self.session = core
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def config(self) -> Config:
        return Config(
            retries={"mode": "adaptive", "max_attempts": self.settings.max_attempts},
            connect_timeout=self.settings.connect_timeout,
            read_timeout=self.settings.read_timeout,
            # Enough for many concurrent CSI calls without queueing on the connection pool.
            max_pool_connections=64,
            user_agent_extra=f"elastivol/{__version__}",
        )

    def client(self, service: str) -> Any:
        with self._lock:
            found = self._clients.get(service)
            if found is None:
                found = self._clients[service] = self.session.create_client(service, region_name=self.region,
                                                                            config=self.config())
            return found
