"""Instance identity from IMDSv2: a session token first, then the identity document.

Timeouts are short: in a container whose route to IMDS needs two hops, the token PUT is dropped
(the instance's hop limit is 1) and the caller falls back to flags or environment variables.
``AWS_EC2_METADATA_SERVICE_ENDPOINT`` and ``AWS_EC2_METADATA_DISABLED`` are honoured as botocore
honours them.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("elastivol.aws.imds")

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL = "21600"


@dataclass(frozen=True)
class InstanceIdentity:
    instance_id: str
    zone: str
    instance_type: str
    region: str
    source: str  # "imds" or "flags"


class ImdsError(Exception):
    pass


class Imds:
    def __init__(self, endpoint: str | None = None, timeout: float = 1.0) -> None:
        self.endpoint = (endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.timeout = timeout

    def _open(self, request: urllib.request.Request) -> bytes:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ImdsError(f"IMDS endpoint {self.endpoint!r} must be an http(s) URL")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return bytes(resp.read(65536))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise ImdsError(f"{request.get_method()} {request.full_url}: {exc}") from exc

    def token(self) -> str:
        req = urllib.request.Request(
            f"{self.endpoint}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL},
        )
        return self._open(req).decode().strip()

    def get(self, path: str, token: str) -> str:
        req = urllib.request.Request(f"{self.endpoint}/latest/{path.lstrip('/')}",
                                     headers={"X-aws-ec2-metadata-token": token})
        return self._open(req).decode().strip()

    def identity(self) -> InstanceIdentity:
        token = self.token()
        doc = json.loads(self.get("dynamic/instance-identity/document", token))
        try:
            return InstanceIdentity(
                instance_id=str(doc["instanceId"]),
                zone=str(doc["availabilityZone"]),
                instance_type=str(doc.get("instanceType", "")),
                region=str(doc.get("region", "")),
                source="imds",
            )
        except KeyError as exc:
            raise ImdsError(f"the identity document lacks {exc}") from exc


def resolve_identity(node_id: str, zone: str, instance_type: str = "", *, timeout: float = 1.0,
                     env: Mapping[str, str] | None = None) -> InstanceIdentity | None:
    """IMDSv2 first; when it cannot be reached, the flags (``--node-id``, ``--zone``) or ``None``."""
    env = os.environ if env is None else env
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true":
        try:
            found = Imds(env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT"), timeout).identity()
            if node_id and node_id != found.instance_id:
                log.warning("--node-id %s differs from IMDS instance id %s; using IMDS", node_id, found.instance_id)
            return found
        except (ImdsError, ValueError) as exc:
            log.info("IMDSv2 not reachable (%s); using --node-id/--zone. In a pod, set the instance metadata "
                     "hop limit to 2 or use hostNetwork to reach IMDS", exc)
    if node_id and zone:
        return InstanceIdentity(node_id, zone, instance_type, zone[:-1] if zone[-1:].isalpha() else "", "flags")
    return None
