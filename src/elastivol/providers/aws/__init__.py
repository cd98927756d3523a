"""The ``aws`` provider: EBS volumes for the block driver, EFS access points for the file driver.

Everything here talks to AWS through boto3 clients made by :mod:`.clients` (adaptive retries,
timeouts, metrics hooks). botocore failures become domain errors in exactly one function,
:func:`.awserrors.translate`. Servicers never see boto3; this package never sees protobufs.
"""
