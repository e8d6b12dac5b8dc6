"""An S3-compatible server on 127.0.0.1 for the object-storage tests: moto's server mode, in the test process.

    with s3_server() as endpoint:        # "http://127.0.0.1:PORT"
        os.environ["AWS_ENDPOINT_URL"] = endpoint

moto (a well-kept AWS mock) answers the S3 API on a local port, conditional writes included
(`If-None-Match: *`, `If-Match`), so s3fs, boto3 and subprocesses reach it as they would a real
store; nothing leaves 127.0.0.1. Buckets live in memory until the server stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def s3_server() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
