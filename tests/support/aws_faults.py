"""A fault layer for tests: what moto does not model, injected with botocore event hooks.

moto answers at once and always the same way. Real AWS is slower, eventually consistent,
throttles, moves volumes through ``creating``/``attaching``/``detaching``/``modifying``, honours
ClientToken idempotency and refuses conflicting attachments. This layer adds those behaviours
to the aws provider's own clients, inside the process that makes the calls:

* ``before-send`` (every HTTP attempt, inside botocore's retry loop) adds latency and answers
  with AWS-shaped error responses: injected errors, throttles (which botocore's adaptive retry
  then handles), ``Invalid*.NotFound`` for objects not visible yet, attach conflicts, and replays
  of ClientToken-idempotent creations;
* ``after-call`` rewrites parsed Describe responses to show transitional states, hides new
  objects from listings for a few calls, and paginates listings that moto returns whole.

Test servers get it through :mod:`tests.support.serve` when ``ELASTIVOL_AWS_FAULTS`` holds a JSON
object (see :class:`FaultConfig`); in-process tests pass a :class:`FaultLayer` to ``AwsClients``. Idempotency records can be kept in a file, so that they outlive a
controller that crashes mid-create, as AWS's would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from botocore.awsrequest import AWSResponse, HeadersDict

from tests.support.aws_faults_modify import ModifyLimits

ENV = "ELASTIVOL_AWS_FAULTS"
FOREVER = 1 << 30
TOKEN_OPERATIONS = ("CreateVolume", "CopyVolumes", "CreateAccessPoint")
# (items key, page size key, token in, token out)
PAGINATED = {
    "DescribeVolumes": ("Volumes", "MaxResults", "NextToken", "NextToken"),
    "DescribeSnapshots": ("Snapshots", "MaxResults", "NextToken", "NextToken"),
    "DescribeAccessPoints": ("AccessPoints", "MaxResults", "NextToken", "NextToken"),
    "DescribeFileSystems": ("FileSystems", "MaxItems", "Marker", "NextMarker"),
}
THROTTLE = {"ec2": ("RequestLimitExceeded", 503), "rest-json": ("ThrottlingException", 429),
            "json": ("ThrottlingException", 400), "query": ("Throttling", 400)}


@dataclass
class FaultConfig:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    throttle_rate: float = 0.0  # share of attempts answered with a throttling error
    throttle_operations: list[str] | None = None  # None: every operation
    seed: int | None = None
    consistency_lag: int = 0  # Describe calls for which a new object stays invisible
    creating_polls: int = 0  # DescribeVolumes showing a new volume as "creating"
    attaching_polls: int = 0
    detaching_polls: int = 0
    snapshot_pending_polls: int = 0
    modifying_polls: int = 0
    optimizing_polls: int = 0
    attach_stuck: bool = False  # attachments never leave "attaching"
    fail_encrypted_creation: bool = False  # encrypted volumes end in "error" (a KMS key the role cannot use)
    client_tokens: bool = True
    attach_conflicts: bool = True
    attachment_limit: int = 0  # block device mappings per instance, 0: none
    paginate: bool = True
    # {operation ("*": any), code, message, status, times (-1: always), after (matching attempts let through first)}
    errors: list[dict[str, Any]] = field(default_factory=list)
    state_file: str = ""
    # ModifyVolume limits (faults_modify.py): refuse while one is in progress; seconds between two.
    modify_one_at_a_time: bool = False
    modify_cooldown_s: float = 0.0

    @classmethod
    def from_json(cls, text: str) -> FaultConfig:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{ENV}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**raw)


def from_env() -> FaultLayer | None:
    text = os.environ.get(ENV, "").strip()
    return FaultLayer(FaultConfig.from_json(text)) if text else None


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> list[bytes]:
        return [self.body]


def _response(status: int, body: bytes, headers: dict[str, str]) -> AWSResponse:
    return AWSResponse("https://elastivol-fault-layer/", status, HeadersDict(headers), _Raw(body))


def error_response(protocol: str, code: str, message: str, status: int = 400) -> AWSResponse:
    if protocol == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
                f"<Message>{escape(message)}</Message></Error></Errors><RequestID>fault-layer</RequestID></Response>")
        return _response(status, body.encode(), {"Content-Type": "text/xml"})
    if protocol == "query":
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code><Message>{escape(message)}"
                "</Message></Error><RequestId>fault-layer</RequestId></ErrorResponse>")
        return _response(status, body.encode(), {"Content-Type": "text/xml"})
    data = json.dumps({"ErrorCode": code, "Message": message, "message": message}).encode()
    return _response(status, data, {"Content-Type": "application/json", "x-amzn-ErrorType": code})


def _fingerprint(params: dict[str, Any]) -> str:
    rest = {k: v for k, v in params.items() if k != "ClientToken"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


class FaultLayer:
    def __init__(self, config: FaultConfig) -> None:
        self.cfg = config
        self.lock = threading.RLock()
        self.rng = random.Random(config.seed)
        self.lag: dict[str, int] = {}
        self.creating: dict[str, int] = {}
        self.failing: dict[str, int] = {}
        self.attaching: dict[tuple[str, str], int] = {}
        self.detaching: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, int] = {}
        self.modifying: dict[str, list[int]] = {}
        self.snapshot_size: dict[str, int] = {}  # moto reports the source volume's size now, EBS its size then
        self.rule_hits: dict[int, int] = {}
        self.tokens: dict[str, dict[str, Any]] = self._load()
        self._raw: Any = None
        self.modify_limits = ModifyLimits(one_at_a_time=config.modify_one_at_a_time,
                                          cooldown_s=config.modify_cooldown_s)

    # -- wiring ----------------------------------------------------------------------------------
    def install(self, events: Any) -> None:
        events.register("before-parameter-build", self._stash, unique_id="elastivol-faults-params")
        events.register("before-send", self._before_send, unique_id="elastivol-faults-send")
        events.register("after-call", self._after_call, unique_id="elastivol-faults-after")

    @staticmethod
    def _stash(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context["fault_op"] = model.name
        context["fault_params"] = dict(params)
        context["fault_protocol"] = model.service_model.protocol

    # -- persistence -----------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.cfg.state_file or not os.path.exists(self.cfg.state_file):
            return {}
        with open(self.cfg.state_file, encoding="utf-8") as fh:
            return dict(json.load(fh).get("tokens", {}))

    def _save(self) -> None:
        if not self.cfg.state_file:
            return
        tmp = f"{self.cfg.state_file}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"tokens": self.tokens}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.cfg.state_file)

    # -- before-send -----------------------------------------------------------------------------
    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        ctx = getattr(request, "context", None) or {}
        op = ctx.get("fault_op")
        if not op:
            return None
        params: dict[str, Any] = ctx.get("fault_params", {})
        protocol = str(ctx.get("fault_protocol", "ec2"))
        if self.cfg.latency_ms or self.cfg.jitter_ms:
            time.sleep(max(self.cfg.latency_ms + self.rng.uniform(-1, 1) * self.cfg.jitter_ms, 0.0) / 1000)
        with self.lock:
            injected = self._rule(op, protocol)
            if injected is not None:
                return injected
            if self.cfg.throttle_rate and (self.cfg.throttle_operations is None or op in self.cfg.throttle_operations):
                if self.rng.random() < self.cfg.throttle_rate:
                    code, status = THROTTLE.get(protocol, THROTTLE["ec2"])
                    return error_response(protocol, code, "Request limit exceeded.", status)
            if op in TOKEN_OPERATIONS and self.cfg.client_tokens and params.get("ClientToken"):
                replay = self._replay(ctx, op, params, protocol)
                if replay is not None:
                    return replay
            hidden = self._hidden(op, params, protocol)
            if hidden is not None:
                return hidden
            if op == "ModifyVolume" and self.modify_limits.enabled:
                vid = str(params.get("VolumeId", ""))
                refused = self.modify_limits.refusal(vid, in_progress=vid in self.modifying)
                if refused is not None:
                    return error_response(protocol, *refused)
        if op == "AttachVolume" and (self.cfg.attach_conflicts or self.cfg.attachment_limit):
            return self._attach_conflict(request, params)
        return None

    def _rule(self, op: str, protocol: str) -> AWSResponse | None:
        for i, rule in enumerate(self.cfg.errors):
            if rule.get("operation") not in (op, "*"):
                continue
            seen = self.rule_hits.get(i, 0)
            self.rule_hits[i] = seen + 1
            after, times = int(rule.get("after", 0)), int(rule.get("times", -1))
            if seen < after or (times >= 0 and seen >= after + times):
                continue
            return error_response(protocol, str(rule["code"]), str(rule.get("message", "")), int(rule.get("status", 400)))
        return None

    def _replay(self, ctx: dict[str, Any], op: str, params: dict[str, Any], protocol: str) -> AWSResponse | None:
        record = self.tokens.get(f"{op}:{params['ClientToken']}")
        if record is None:
            return None
        if record["fingerprint"] != _fingerprint(params):
            return error_response(
                protocol, "IdempotentParameterMismatch",
                "The client token you have provided is associated with a resource that is already deleted or "
                "a request with different parameters.", 400 if protocol == "ec2" else 409,
            )
        ctx["fault_replayed"] = True
        return _response(int(record["status"]), base64.b64decode(record["body"]), dict(record["headers"]))

    def _hidden(self, op: str, params: dict[str, Any], protocol: str) -> AWSResponse | None:
        asked: list[str] = []
        if op == "DescribeVolumes":
            asked, code, what = list(params.get("VolumeIds") or []), "InvalidVolume.NotFound", "volume"
        elif op == "DescribeSnapshots":
            asked, code, what = list(params.get("SnapshotIds") or []), "InvalidSnapshot.NotFound", "snapshot"
        elif op == "DescribeAccessPoints" and params.get("AccessPointId"):
            asked, code, what = [str(params["AccessPointId"])], "AccessPointNotFound", "access point"
        hidden = [i for i in asked if self.lag.get(i, 0) > 0]
        if not hidden:
            return None
        for i in hidden:
            self.lag[i] -= 1
        if what == "access point":
            return error_response(protocol, code, f"Access point {hidden[0]} does not exist.", 404)
        return error_response(protocol, code, f"The {what}(s) '{', '.join(hidden)}' does not exist.")

    def _raw_ec2(self, url: str) -> Any:
        if self._raw is None:
            import boto3  # only the fault layer needs an unhooked client

            parts = urlsplit(url)
            self._raw = boto3.session.Session().client(
                "ec2", endpoint_url=f"{parts.scheme}://{parts.netloc}", region_name="us-east-1",
                aws_access_key_id="fault-layer", aws_secret_access_key="fault-layer",
            )
        return self._raw

    def _attach_conflict(self, request: Any, params: dict[str, Any]) -> AWSResponse | None:
        """What EC2 refuses and moto accepts: a second attachment, a taken device name, a full instance."""
        raw = self._raw_ec2(request.url)
        volume_id, instance_id, device = params.get("VolumeId"), params.get("InstanceId"), params.get("Device")
        try:
            volume = raw.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
            found = raw.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except Exception:  # let the real call report unknown ids
            return None
        mappings = [m for r in found for i in r["Instances"] for m in i.get("BlockDeviceMappings", [])]
        with self.lock:
            draining = [d for v, d in self.detaching.items() if d["InstanceId"] == instance_id and d["n"] > 0]
        if not volume.get("MultiAttachEnabled") and any(
            a.get("State") in ("attaching", "attached") for a in volume.get("Attachments", [])
        ):
            return error_response("ec2", "VolumeInUse", f"{volume_id} is already attached to an instance")
        names = {m.get("DeviceName") for m in mappings} | {d["Device"] for d in draining}
        if self.cfg.attach_conflicts and device in names:
            return error_response("ec2", "InvalidParameterValue",
                                  f"Invalid value '{device}' for unixDevice. Attachment point {device} is already in use")
        if self.cfg.attachment_limit and len(mappings) + len(draining) >= self.cfg.attachment_limit:
            return error_response("ec2", "AttachmentLimitExceeded",
                                  f"You have reached the maximum number of attachments for instance {instance_id}")
        return None

    # -- after-call ------------------------------------------------------------------------------
    def _after_call(self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any],
                    **_: Any) -> None:
        if http_response is None or http_response.status_code >= 300:
            return
        op = model.name
        params: dict[str, Any] = context.get("fault_params", {})
        replayed = bool(context.get("fault_replayed"))
        with self.lock:
            if op in TOKEN_OPERATIONS and params.get("ClientToken") and not replayed and self.cfg.client_tokens:
                self.tokens[f"{op}:{params['ClientToken']}"] = {
                    "fingerprint": _fingerprint(params), "status": http_response.status_code,
                    "headers": {k: v for k, v in http_response.headers.items() if k.lower() != "content-length"},
                    "body": base64.b64encode(http_response.content).decode(),
                }
                self._save()
            if not replayed:
                self._created(op, params, parsed)
            shape = getattr(self, f"_shape_{op}", None)
            if shape is not None:
                shape(parsed, params)
            if op in PAGINATED and self.cfg.paginate:
                self._paginate(op, parsed, params)

    def _created(self, op: str, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        cfg = self.cfg
        if op in ("CreateVolume", "CopyVolumes"):
            vids = [parsed["VolumeId"]] if op == "CreateVolume" else [v["VolumeId"] for v in parsed.get("Volumes", [])]
            for vid in vids:
                self.lag[vid] = cfg.consistency_lag
                self.creating[vid] = cfg.creating_polls
                if cfg.fail_encrypted_creation and params.get("Encrypted"):
                    self.failing[vid] = cfg.creating_polls
            if op == "CreateVolume" and (cfg.creating_polls or vids[0] in self.failing):
                parsed["State"] = "creating"
        elif op == "CreateSnapshot":
            self.snapshot_size[parsed["SnapshotId"]] = int(parsed.get("VolumeSize", 0))
            self.lag[parsed["SnapshotId"]] = cfg.consistency_lag
            self.pending[parsed["SnapshotId"]] = cfg.snapshot_pending_polls
            if cfg.snapshot_pending_polls:
                parsed["State"] = "pending"
        elif op == "AttachVolume":
            self.attaching[(parsed["VolumeId"], parsed["InstanceId"])] = FOREVER if cfg.attach_stuck else cfg.attaching_polls
            self.detaching.pop(parsed["VolumeId"], None)
            parsed["State"] = "attaching"
        elif op == "DetachVolume":
            self.attaching.pop((parsed["VolumeId"], parsed["InstanceId"]), None)
            self.detaching[parsed["VolumeId"]] = {"InstanceId": parsed["InstanceId"], "Device": parsed.get("Device", ""),
                                                  "n": cfg.detaching_polls}
            parsed["State"] = "detaching"
        elif op == "ModifyVolume":
            mod = parsed.get("VolumeModification", {})
            self.modifying[mod.get("VolumeId", "")] = [cfg.modifying_polls, cfg.optimizing_polls]
            self.modify_limits.accepted(mod.get("VolumeId", ""))
            if cfg.modifying_polls:
                mod["ModificationState"] = "modifying"
        elif op == "CreateAccessPoint":
            self.lag[parsed["AccessPointId"]] = cfg.consistency_lag

    def _visible(self, oid: str, listing: bool) -> bool:
        if listing and self.lag.get(oid, 0) > 0:
            self.lag[oid] -= 1
            return False
        return True

    def _shape_DescribeVolumes(self, parsed: dict[str, Any], params: dict[str, Any]) -> None:
        listing = not params.get("VolumeIds")
        kept = []
        for v in parsed.get("Volumes", []):
            vid = v["VolumeId"]
            if not self._visible(vid, listing):
                continue
            if vid in self.failing:
                v["State"] = "creating" if self.failing[vid] > 0 else "error"
                self.failing[vid] -= 1
            elif self.creating.get(vid, 0) > 0:
                self.creating[vid] -= 1
                v["State"] = "creating"
            attachments = v.setdefault("Attachments", [])
            for a in attachments:
                key = (vid, a.get("InstanceId", ""))
                if self.attaching.get(key, 0) > 0:
                    self.attaching[key] -= 1
                    a["State"] = "attaching"
            leaving = self.detaching.get(vid)
            if leaving is not None and leaving["n"] > 0 and not any(
                a.get("InstanceId") == leaving["InstanceId"] for a in attachments
            ):
                leaving["n"] -= 1
                attachments.append({"VolumeId": vid, "InstanceId": leaving["InstanceId"], "Device": leaving["Device"],
                                    "State": "detaching", "DeleteOnTermination": False})
                v["State"] = "in-use"
            kept.append(v)
        parsed["Volumes"] = kept

    def _shape_DescribeInstances(self, parsed: dict[str, Any], params: dict[str, Any]) -> None:
        for r in parsed.get("Reservations", []):
            for inst in r.get("Instances", []):
                iid = inst["InstanceId"]
                mappings = inst.setdefault("BlockDeviceMappings", [])
                for m in mappings:
                    ebs = m.get("Ebs", {})
                    if self.attaching.get((ebs.get("VolumeId", ""), iid), 0) > 0:
                        ebs["Status"] = "attaching"
                present = {m.get("Ebs", {}).get("VolumeId") for m in mappings}
                for vid, d in self.detaching.items():
                    if d["InstanceId"] == iid and d["n"] > 0 and vid not in present:
                        mappings.append({"DeviceName": d["Device"], "Ebs": {"VolumeId": vid, "Status": "detaching"}})

    def _shape_DescribeSnapshots(self, parsed: dict[str, Any], params: dict[str, Any]) -> None:
        listing = not params.get("SnapshotIds")
        kept = []
        for s in parsed.get("Snapshots", []):
            if not self._visible(s["SnapshotId"], listing):
                continue
            if s["SnapshotId"] in self.snapshot_size:
                s["VolumeSize"] = self.snapshot_size[s["SnapshotId"]]
            if self.pending.get(s["SnapshotId"], 0) > 0:
                self.pending[s["SnapshotId"]] -= 1
                s["State"], s["Progress"] = "pending", "50%"
            kept.append(s)
        parsed["Snapshots"] = kept

    def _shape_DescribeVolumesModifications(self, parsed: dict[str, Any], params: dict[str, Any]) -> None:
        latest: dict[str, dict[str, Any]] = {}
        for m in parsed.get("VolumesModifications", []):
            latest[m.get("VolumeId", "")] = m
        for vid, m in latest.items():
            counts = self.modifying.get(vid)
            if counts is None:
                continue
            if counts[0] > 0:
                counts[0] -= 1
                m["ModificationState"] = "modifying"
            elif counts[1] > 0:
                counts[1] -= 1
                m["ModificationState"] = "optimizing"
            else:
                del self.modifying[vid]

    def _shape_DescribeAccessPoints(self, parsed: dict[str, Any], params: dict[str, Any]) -> None:
        listing = not params.get("AccessPointId")
        parsed["AccessPoints"] = [a for a in parsed.get("AccessPoints", []) if self._visible(a["AccessPointId"], listing)]

    @staticmethod
    def _paginate(op: str, parsed: dict[str, Any], params: dict[str, Any]) -> None:
        key, size_key, token_in, token_out = PAGINATED[op]
        size = int(params.get(size_key) or 0)
        if not size:
            return
        items = parsed.get(key, [])
        start = int(params.get(token_in) or 0)
        parsed[key] = items[start : start + size]
        if start + size < len(items):
            parsed[token_out] = str(start + size)
        else:
            parsed.pop(token_out, None)
