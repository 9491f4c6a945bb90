"""The job's start-up, step by step: CPU from exec to its first range request, as it is now
and as it was before issue 22 (`before`), against the bench's server.

Run by the bench in the job's interpreter, once per sample: `python startup_steps.py now|before`
prints one JSON object, each step's CPU-seconds (the whole process, user + system). The
steps are the job's own, in its order; `before` takes the old way at each step where one
changed: the cycle collector running through the imports, botocore's full data for the
client, botocore's own HEAD on a connection of its own, and a TLS context that loads the
system's store and then the whole CA bundle.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(way: str) -> dict[str, float]:  # noqa: PLR0915 - the steps in the job's own order
    before = way == "before"
    steps: dict[str, float] = {"interpreter": cpu()}
    last = steps["interpreter"]

    def step(name: str) -> None:
        nonlocal last
        now = cpu()
        steps[name] = now - last
        last = now

    if not before:
        gc.disable()
    import ssl

    import botocore.session

    from task import download
    from task.frame import make_client
    from task.http_ranges import format_request
    from task.settings import Settings, load_processor

    if not before:
        gc.freeze()
        gc.enable()
    step("imports (botocore, the frame)")
    settings = Settings.from_environ(os.environ)
    load_processor(settings.processor_spec)
    step("settings, processor")
    if before:
        session = botocore.session.get_session()
        region = os.environ.get("AWS_REGION")
        client = cast("S3Client", session.create_client("s3", region_name=region))
    else:
        client = make_client(settings)
    step("S3 client")
    if before:
        obj = download.describe_object(client, settings.bucket, settings.key)
        direct = None
    else:
        obj, direct = download.describe(client, settings.bucket, settings.key)
    step("HEAD")
    presigned: download.PresignedGet | None
    if before:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=os.environ["AWS_CA_BUNDLE"])
        step("TLS context")
        params = {"Bucket": obj.bucket, "Key": obj.key}
        presigned = download.PresignedGet(client, params, context)
    else:
        presigned = download.PresignedGet.for_client(client, obj)
        step("TLS context")
    if presigned is None:
        raise SystemExit("the direct reads are off for this client: nothing to measure")
    reusable = direct.connection if direct is not None else None
    sock = reusable or presigned.endpoint.connect(10)
    sock.sendall(format_request(presigned.target(), presigned.endpoint.host_header, 0, 1023, {}))
    step("first range requested (presign, connect)")
    steps["total"] = cpu()
    return steps


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
