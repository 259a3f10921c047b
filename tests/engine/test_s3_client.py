"""S3 clients load a slimmed botocore (AWS endpoints and STS still work); parts upload from views.

Signing and uploads through it are proven against real servers in test_s3.py.
"""

from __future__ import annotations

import io
import itertools
import json

import boto3
import botocore.session
import pytest

from heapsnap.sinks._s3client import _loader
from heapsnap.sinks.s3 import S3Config, _PartBody, make_client


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"])
def test_the_slimmed_data_places_aws_endpoints_as_botocore_s_own_does(region: str) -> None:
    ours = make_client(S3Config(bucket="b", region=region, access_key_id="a", secret_access_key="s"))
    stock = boto3.session.Session(
        aws_access_key_id="a", aws_secret_access_key="s", region_name=region
    ).client("s3")
    assert ours.meta.endpoint_url == stock.meta.endpoint_url
    local = S3Config(
        bucket="b",
        endpoint_url="http://127.0.0.1:9000",
        region=region,
        force_path_style=True,
        access_key_id="a",
        secret_access_key="s",
    )
    assert make_client(local).meta.endpoint_url == "http://127.0.0.1:9000"


def test_what_is_left_out_is_only_other_services_and_documentation() -> None:
    loader = _loader()
    endpoints, _ = loader.load_data_with_path("endpoints")
    for partition in endpoints["partitions"]:
        assert set(partition["services"]) <= {"s3", "sts"}
    assert "s3" in endpoints["partitions"][0]["services"]
    model = loader.load_service_model("s3", "service-2")
    assert {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"} <= set(model["operations"])
    assert '"documentation": ""' in json.dumps(model)
    assert '"documentation": "<' not in json.dumps(model)  # texts, which are HTML, are gone


def test_credential_providers_can_still_make_sts_clients() -> None:
    # Web identity (IRSA) and assume-role credentials call STS through the same session.
    session = botocore.session.get_session()
    session.register_component("data_loader", _loader())
    sts = boto3.session.Session(botocore_session=session, region_name="eu-west-1").client(
        "sts", aws_access_key_id="a", aws_secret_access_key="s"
    )
    assert sts.meta.endpoint_url == "https://sts.eu-west-1.amazonaws.com"


@pytest.mark.parametrize("block", [1, 7, 4096, 1 << 20])
def test_a_part_made_of_pieces_reads_and_seeks_as_one_file(block: int) -> None:
    data = bytes(range(256)) * 40
    cuts = [0, 3, 3, 1000, 5000, len(data)]  # an empty piece too
    body = _PartBody([memoryview(data)[a:b] for a, b in itertools.pairwise(cuts)])
    assert len(body) == len(data)
    read = bytearray()
    while chunk := body.read(block):
        read += chunk
    assert read == data
    body.seek(4998)
    assert body.read(5) == data[4998:5003] and body.tell() == 5003
    body.seek(-2, io.SEEK_END)
    assert body.read() == data[-2:]
