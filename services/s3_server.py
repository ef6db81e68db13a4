"""moto's S3 server for the stack (``python -m services.s3_server -H HOST -p PORT``), its access
log redacted: a presigned URL (MLflow serves some artifact downloads by redirecting to one) holds
``X-Amz-Credential=<access key id>/…`` and ``X-Amz-Signature=…``, which would otherwise be written
to the stack's ``s3.log`` as they are."""

from __future__ import annotations

import logging
import sys

from sepcore.redact import redact


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def main(argv: list[str] | None = None) -> None:
    from moto.server import main as moto_main

    logging.getLogger("werkzeug").addFilter(_Redacting())
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
