# Fixtures live in live.py with the helpers the tests import: a module named after its directory
# layer, because every conftest.py outside a package is imported under the one name "conftest".
from live import mreg, mreg_home, registry  # noqa: F401
from s3live import ceph, replicas  # noqa: F401
