"""Publishes to and deletes from an S3-compatible store with boto3, for the
object-storage tests (server/tests/object_storage.rs):

    python tests/peers/s3.py ENDPOINT create BUCKET
    python tests/peers/s3.py ENDPOINT upload BUCKET PREFIX DIR   # DIR's files under PREFIX, model.json last
    python tests/peers/s3.py ENDPOINT delete BUCKET PREFIX       # every object under PREFIX
    python tests/peers/s3.py ENDPOINT put BUCKET KEY FILE        # FILE's bytes at KEY, exactly as given

Credentials are moto's test defaults (any key is accepted).
"""

import os
import sys

import boto3

endpoint, command, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
    region_name="us-east-1",
)
if command == "create":
    s3.create_bucket(Bucket=bucket)
elif command == "upload":
    prefix, directory = sys.argv[4], sys.argv[5]
    files = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            files.append((name == "model.json", os.path.relpath(path, directory), path))
    for _, relative, path in sorted(files):
        s3.upload_file(path, bucket, f"{prefix}/{relative}")
elif command == "delete":
    prefix = sys.argv[4]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    for item in listed.get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
elif command == "put":
    key, path = sys.argv[4], sys.argv[5]
    with open(path, "rb") as body:
        s3.put_object(Bucket=bucket, Key=key, Body=body.read())
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key)
    if key not in [item["Key"] for item in listed.get("Contents", [])]:
        sys.exit(f"the store did not keep the key {key!r} as given")
else:
    sys.exit(f"unknown command {command}")
