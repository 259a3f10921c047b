"""Root of the test suite. Each area keeps its fixtures in its own plugin module; the
shared ones (real Node.js processes, real S3 servers, the real control plane) are
listed here so every area can use them."""

pytest_plugins: list[str] = ["tests.support.nodeproc", "tests.support.s3server", "tests.cluster.fixtures"]
