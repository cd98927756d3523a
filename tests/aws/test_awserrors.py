"""botocore failures become domain errors in one place, with messages a person can act on."""

from __future__ import annotations

import pytest
from botocore import exceptions as bce

from elastivol import errors
from elastivol.grpc_errors import status_for
from elastivol.providers.aws.awserrors import code_of, translate

SEED_004 = "No OpenIDConnect provider found in your account for https://oidc.eks.ap-northeast-2.amazonaws.com/id/ABC"


def client_error(code: str, message: str = "", operation: str = "CreateVolume") -> bce.ClientError:
    return bce.ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize(
    ("exc", "kind", "grpc_code"),
    [
        (bce.NoCredentialsError(), errors.Unauthenticated, "UNAUTHENTICATED"),
        (client_error("InvalidIdentityToken", SEED_004, "AssumeRoleWithWebIdentity"), errors.Unauthenticated, "UNAUTHENTICATED"),
        (client_error("ExpiredToken", "The security token included in the request is expired"), errors.Unauthenticated, "UNAUTHENTICATED"),
        (client_error("AuthFailure", "AWS was not able to validate the provided access credentials"), errors.Unauthenticated, "UNAUTHENTICATED"),
        (client_error("UnauthorizedOperation", "You are not authorized"), errors.PermissionDenied, "PERMISSION_DENIED"),
        (client_error("AccessDeniedException", "denied", "CreateAccessPoint"), errors.PermissionDenied, "PERMISSION_DENIED"),
        (client_error("RequestLimitExceeded", "Request limit exceeded."), errors.Unavailable, "UNAVAILABLE"),
        (client_error("ThrottlingException", "Rate exceeded", "DescribeAccessPoints"), errors.Unavailable, "UNAVAILABLE"),
        (client_error("InvalidParameterValue", "bad size"), errors.InvalidArgument, "INVALID_ARGUMENT"),
        (client_error("InvalidParameterCombination", "no"), errors.InvalidArgument, "INVALID_ARGUMENT"),
        (client_error("InvalidVolume.NotFound", "The volume 'vol-1' does not exist."), errors.NotFound, "NOT_FOUND"),
        (client_error("AccessPointNotFound", "nope", "DescribeAccessPoints"), errors.NotFound, "NOT_FOUND"),
        (client_error("IdempotentParameterMismatch", "differs"), errors.AlreadyExists, "ALREADY_EXISTS"),
        (client_error("VolumeInUse", "Volume vol-1 is currently attached to i-0123456789abcdef0"), errors.InUse, "FAILED_PRECONDITION"),
        (client_error("AttachmentLimitExceeded", "full", "AttachVolume"), errors.Exhausted, "RESOURCE_EXHAUSTED"),
        (bce.EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com"), errors.Unavailable, "UNAVAILABLE"),
        (client_error("SomethingNew", "??"), errors.Internal, "INTERNAL"),
    ],
)
def test_translation_table(exc: Exception, kind: type[errors.ElastivolError], grpc_code: str) -> None:
    got = translate(exc, "efs" if "Access" in getattr(exc, "operation_name", "") else "ec2",
                    getattr(exc, "operation_name", "CreateVolume"))
    assert isinstance(got, kind)
    assert status_for(got)[0].name == grpc_code


def test_seed_004_web_identity_failure_says_what_to_do() -> None:
    exc = client_error("InvalidIdentityToken", SEED_004, "AssumeRoleWithWebIdentity")
    message = translate(exc, "ec2", "CreateVolume").message
    assert message.startswith("CreateVolume (ec2:CreateVolume)")
    assert SEED_004 in message
    assert "eksctl utils associate-iam-oidc-provider" in message and "OIDC" in message


def test_trust_policy_refusal_points_at_the_service_account() -> None:
    exc = client_error("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity", "AssumeRoleWithWebIdentity")
    got = translate(exc, "ec2", "AttachVolume")
    assert isinstance(got, errors.Unauthenticated)
    assert "system:serviceaccount:" in got.message and "trust policy" in got.message


def test_missing_permission_names_every_action_needed() -> None:
    got = translate(client_error("UnauthorizedOperation", "You are not authorized. Encoded authorization failure message: abc"),
                    "ec2", "CreateVolume")
    assert "ec2:CreateVolume" in got.message and "ec2:CreateTags" in got.message
    assert "eks.amazonaws.com/role-arn" in got.message and "decode-authorization-message" in got.message


def test_no_credentials_message_names_the_irsa_annotation() -> None:
    got = translate(bce.NoCredentialsError(), "efs", "CreateAccessPoint")
    assert "elasticfilesystem:CreateAccessPoint" in got.message and "eks.amazonaws.com/role-arn" in got.message


def test_volume_in_use_keeps_the_instance() -> None:
    got = translate(client_error("VolumeInUse", "Volume vol-1 is currently attached to i-0123456789abcdef0"), "ec2", "DeleteVolume")
    assert isinstance(got, errors.InUse) and got.node == "i-0123456789abcdef0"


def test_code_of_follows_the_cause() -> None:
    try:
        try:
            raise client_error("IncorrectState", "detaching")
        except bce.ClientError as inner:
            raise translate(inner, "ec2", "DetachVolume") from inner
    except errors.ElastivolError as outer:
        assert code_of(outer) == "IncorrectState"
