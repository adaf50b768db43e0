"""The S3 client's signature and settings (its calls run against Ceph in tests/integration/test_s3_gc.py)."""

from __future__ import annotations

import datetime

import pytest

from mreg_proxy.storage.s3 import S3Error, S3Settings, sign

AWS_EXAMPLE = S3Settings("https://s3.amazonaws.com", "us-east-1", "examplebucket",
                         "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def test_signature_matches_the_aws_documentation_example() -> None:
    """AWS's "Signature Version 4" example "GET Bucket (List Objects)": the documented signature."""
    headers = sign(AWS_EXAMPLE, "GET", "examplebucket.s3.amazonaws.com", "/", "max-keys=2&prefix=J",
                   datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc))
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_settings_come_from_the_registry_variables() -> None:
    env = {"REGISTRY_STORAGE_S3_REGION": "eu-1", "REGISTRY_STORAGE_S3_REGIONENDPOINT": "s3.example:9000",
           "REGISTRY_STORAGE_S3_BUCKET": "b", "REGISTRY_STORAGE_S3_ACCESSKEY": "k",
           "REGISTRY_STORAGE_S3_SECRETKEY": "s", "REGISTRY_STORAGE_S3_SECURE": "false",
           "REGISTRY_STORAGE_S3_ROOTDIRECTORY": "/reg/"}
    assert S3Settings.from_registry_env(env) == S3Settings("http://s3.example:9000", "eu-1", "b", "k", "s", "reg")


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(S3Error, match="REGISTRY_STORAGE_S3_BUCKET"):
        S3Settings.from_registry_env({"REGISTRY_STORAGE_S3_REGIONENDPOINT": "http://x", "REGISTRY_STORAGE_S3_REGION": "r"})
