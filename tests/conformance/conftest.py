"""The conformance runs reuse the aws package's moto server and clients (one moto per session)."""

from tests.aws.conftest import aws_env, aws_work, moto, raw_ec2, raw_efs

__all__ = ["aws_env", "aws_work", "moto", "raw_ec2", "raw_efs"]
