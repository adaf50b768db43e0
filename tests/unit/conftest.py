# Fixtures live in proxy_harness.py with the helpers the tests import (see tests/integration/conftest.py).
from proxy_harness import proxy, upstream, users_file  # noqa: F401
