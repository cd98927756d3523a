"""The one place where botocore failures become domain errors, with messages a person can act on.

Every message names the operation, the IAM action involved, what AWS said, and the likely fix.
The seeds show where people lose hours: ``WebIdentityErr: failed to retrieve credentials ...
No OpenIDConnect provider found`` (seed 004) and volumes that cannot be deleted while attached.
Nothing here ever includes a credential: only codes, AWS's own messages, ARNs and ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from botocore import exceptions as bce
from botocore.parsers import ResponseParserError

from elastivol import errors

IAM_PREFIX = {"ec2": "ec2", "efs": "elasticfilesystem", "sts": "sts", "kms": "kms"}
DOCS = "the README's EKS section (IAM policy)"

# Actions that an operation needs besides its own, because of what this driver sends with it.
EXTRA_ACTIONS = {
    "CreateVolume": ("ec2:CreateTags",),
    "CopyVolumes": ("ec2:CreateTags",),
    "CreateSnapshot": ("ec2:CreateTags",),
    "CreateAccessPoint": ("elasticfilesystem:TagResource",),
}

THROTTLING = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "RequestThrottled", "RequestThrottledException", "EC2ThrottledException", "SlowDown", "BandwidthLimitExceeded",
    "PriorRequestNotComplete",
})
_UNAVAILABLE = frozenset({
    "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure", "InternalServerError",
    "RequestTimeout", "RequestTimeoutException",
})
_WEB_IDENTITY = frozenset({"InvalidIdentityToken", "IDPRejectedClaim", "IDPCommunicationError"})
_REJECTED = frozenset({
    "AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
    "IncompleteSignature", "MissingAuthenticationToken", "InvalidAccessKeyId",
})
_EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Forbidden"})
_EXHAUSTED = frozenset({
    "AttachmentLimitExceeded", "VolumeLimitExceeded", "SnapshotLimitExceeded", "AccessPointLimitExceeded",
    "MaxIOPSLimitExceeded", "InsufficientVolumeCapacity", "ResourceLimitExceeded", "FileSystemLimitExceeded",
    "InsufficientThroughputCapacity", "ThroughputLimitExceeded", "VolumeModificationRateExceeded",
})
_PRECONDITION = frozenset({
    "IncorrectState", "IncorrectModificationState", "IncorrectInstanceState", "InvalidVolume.ZoneMismatch",
    "IncorrectFileSystemLifeCycleState", "InvalidSnapshot.InUse", "DependencyViolation", "FileSystemInUse",
    "IncorrectMountTargetState",
})
_ALREADY = frozenset({"IdempotentParameterMismatch", "AccessPointAlreadyExists", "FileSystemAlreadyExists"})


def iam_action(service: str, operation: str) -> str:
    return f"{IAM_PREFIX.get(service, service)}:{operation}"


def code_of(exc: BaseException | None) -> str:
    """The AWS error code behind ``exc`` (a ClientError, or a domain error raised from one)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, bce.ClientError):
            return str(exc.response.get("Error", {}).get("Code", ""))
        exc = exc.__cause__
        seen += 1
    return ""


def aws_message(exc: bce.ClientError, limit: int = 400) -> str:
    text = str(exc.response.get("Error", {}).get("Message", "")).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """Call ``operation`` (its API name, e.g. "CreateVolume") and translate any failure."""
    service = client.meta.service_model.service_name
    method: Callable[..., dict[str, Any]] = getattr(client, _snake(operation))
    try:
        return method(**params)
    except (bce.ClientError, bce.BotoCoreError, ResponseParserError) as exc:
        raise translate(exc, service, operation) from exc


def call_delete(client: Any, operation: str, **params: Any) -> None:
    """Call a delete ``operation``; a resource that is already gone counts as deleted (the CO retries
    deletes, and a delete is done once the thing does not exist)."""
    try:
        call(client, operation, **params)
    except errors.NotFound:
        pass


_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(operation: str) -> str:
    return _SNAKE.sub("_", operation).lower()


def translate(exc: BaseException, service: str, operation: str) -> errors.ElastivolError:
    """Turn a botocore failure of ``service``'s ``operation`` into a domain error for people."""
    action = iam_action(service, operation)
    where = f"{operation} ({action})"
    if isinstance(exc, bce.NoCredentialsError):
        return errors.Unauthenticated(f"{where}: no AWS credentials were found. {_NO_CREDENTIALS_FIX}")
    if isinstance(exc, bce.PartialCredentialsError):
        return errors.Unauthenticated(f"{where}: incomplete AWS credentials ({exc}); set both the access key id and the secret")
    if isinstance(exc, bce.CredentialRetrievalError | bce.InvalidConfigError | bce.UnknownCredentialError):
        return errors.Unauthenticated(f"{where}: could not load AWS credentials: {exc}. {_IRSA_FIX}")
    if isinstance(exc, bce.NoRegionError):
        return errors.InvalidArgument(f"{where}: no AWS region is configured; set AWS_REGION (on EC2 it comes from IMDS)")
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError | bce.ReadTimeoutError
                  | bce.ConnectionClosedError | bce.ProxyConnectionError):
        return errors.Unavailable(
            f"{where}: cannot reach the {service.upper()} API ({exc}); check the network path to AWS "
            "(VPC endpoints, proxy, security groups) or AWS_ENDPOINT_URL; the call will be retried"
        )
    if isinstance(exc, ResponseParserError):
        return errors.Internal(
            f"{where}: the endpoint answered with something that is not an AWS API response (is AWS_ENDPOINT_URL "
            f"right, and does it implement {operation}?): {str(exc)[:200]}"
        )
    if isinstance(exc, bce.ParamValidationError):
        return errors.InvalidArgument(f"{where}: the request was refused before sending: {exc}")
    if not isinstance(exc, bce.ClientError):
        return errors.Internal(f"{where} failed: {type(exc).__name__}: {exc}")

    code = code_of(exc)
    text = aws_message(exc)
    said = f"{code}: {text}" if text else code
    failed_op = getattr(exc, "operation_name", operation)
    if failed_op == "AssumeRoleWithWebIdentity" or code in _WEB_IDENTITY or "AssumeRoleWithWebIdentity" in text:
        return errors.Unauthenticated(f"{where}: {_web_identity(code, text)}")
    if code in _REJECTED:
        return errors.Unauthenticated(
            f"{where}: AWS rejected the credentials ({said}). The access key is unknown or its secret is wrong, "
            "or the clock is skewed; on EKS prefer IRSA (service account annotation eks.amazonaws.com/role-arn) "
            f"over static keys. See {DOCS}."
        )
    if code in _EXPIRED:
        return errors.Unauthenticated(
            f"{where}: the AWS credentials have expired ({said}). If they are static session keys, refresh "
            "them; with IRSA, check that the projected token is mounted and the node clock is right, then "
            "restart the pod."
        )
    if code in _DENIED:
        needed = ", ".join((action, *EXTRA_ACTIONS.get(operation, ())))
        decode = (
            " Decode AWS's details with `aws sts decode-authorization-message --encoded-message <message>`."
            if "encoded authorization failure message" in text.lower() else ""
        )
        return errors.PermissionDenied(
            f"{where}: access denied ({said}). The IAM role the controller runs as needs {needed}: add the "
            f"policy in {DOCS} to that role. On EKS it is the role in the service account annotation "
            "eks.amazonaws.com/role-arn (IRSA); without the annotation the pod falls back to the node's "
            f"instance role, which usually lacks it.{decode}"
        )
    if code in THROTTLING:
        return errors.Unavailable(
            f"{where}: AWS kept throttling the call ({said}) through every adaptive retry; too many API calls "
            "in this account and region at once (other tools share the limit). It will be retried."
        )
    if code in _UNAVAILABLE:
        return errors.Unavailable(f"{where}: AWS could not serve the call now ({said}); it will be retried")
    if code in _ALREADY:
        return errors.AlreadyExists(f"{where}: {said}")
    if code == "VolumeInUse":
        return errors.InUse(f"{where}: {said}", node=_instance_in(text))
    if code in _PRECONDITION:
        return errors.FailedPrecondition(f"{where}: {said}")
    if code in _EXHAUSTED:
        return errors.Exhausted(f"{where}: {said}")
    if code.startswith("InvalidKMSKey") or code.startswith("KMS") or code == "InvalidZone.NotFound":
        return errors.InvalidArgument(f"{where}: {said}")
    if (
        code.startswith("InvalidParameter") or code.endswith(".Malformed")
        or code in ("MissingParameter", "ValidationError", "ValidationException", "BadRequest", "UnknownVolumeType")
    ):
        return errors.InvalidArgument(f"{where}: AWS refused the request ({said})")
    if code.endswith("NotFound") or code == "NoSuchEntity":
        return errors.NotFound(f"{where}: {said}")
    return errors.Internal(f"{where} failed: {said}")


_INSTANCE = re.compile(r"\bi-[0-9a-f]{8,17}\b")


def _instance_in(text: str) -> str | None:
    m = _INSTANCE.search(text)
    return m.group(0) if m else None


_IRSA_FIX = (
    "On EKS, the controller's service account needs the annotation eks.amazonaws.com/role-arn naming an IAM "
    "role whose trust policy allows sts:AssumeRoleWithWebIdentity from the cluster's OIDC provider for "
    f"system:serviceaccount:<namespace>:<service-account>; restart the pod after changing it. See {DOCS}."
)
_NO_CREDENTIALS_FIX = (
    "On EKS, annotate the controller's service account with eks.amazonaws.com/role-arn (IRSA) and restart "
    "the pod, so that AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE are injected; elsewhere, provide "
    f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance profile. See {DOCS}."
)


def _web_identity(code: str, text: str) -> str:
    said = f"{code}: {text}" if text else code
    head = f"could not get AWS credentials: the web identity (IRSA) exchange sts:AssumeRoleWithWebIdentity failed ({said})."
    if "openidconnect provider" in text.lower() or "oidc provider" in text.lower():
        return (
            f"{head} The cluster's OIDC issuer is not registered as an IAM identity provider in this account "
            "(it may have been deleted, or created for another cluster). Register it with "
            "`eksctl utils associate-iam-oidc-provider --cluster <cluster> --approve` (or IAM > Identity "
            "providers > Add provider, with the cluster's issuer URL and audience sts.amazonaws.com), then "
            f"restart the controller pod. See {DOCS}."
        )
    if code in ("AccessDenied", "AccessDeniedException") or "not authorized" in text.lower():
        return (
            f"{head} The role's trust policy does not allow this service account: its Condition must match "
            "<issuer>:sub = system:serviceaccount:<namespace>:<service-account> and <issuer>:aud = "
            f"sts.amazonaws.com, and the annotation eks.amazonaws.com/role-arn must name that role. See {DOCS}."
        )
    if code in _EXPIRED or "expired" in text.lower():
        return (
            f"{head} The projected service account token has expired or the node clock is wrong; check the "
            "token volume and NTP, then restart the pod."
        )
    return f"{head} {_IRSA_FIX}"
