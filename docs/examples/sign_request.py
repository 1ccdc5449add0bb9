#!/usr/bin/env python3
"""Sign a request with PG-HMAC-SHA256 (docs/client-signing.md) and send it.

This example is now the command line of the Python client library, clients/python
(`pip install ./clients/python`, then `payguard-sign ...` or `python3 -m payguard_sign ...`);
this script runs it from a checkout without installing anything. Example:

    PG_SECRET=s3cret python3 docs/examples/sign_request.py --key shop-app --secret-env PG_SECRET \
        --method POST --data '{"sku":"A-1","qty":2}' \
        'http://127.0.0.1:8080/v1/orders?b=2&a=1'
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))

from payguard_sign.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
