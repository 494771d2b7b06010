"""The security suite: each test performs one attack from the threat model (docs/DESIGN.md) on the
real API server, or on the local node, and asserts that it is refused, with the message a user sees.

The controller suite's fixtures (an admin client, the CRD, in-process controllers) are shared.
"""

from controller_fixtures import (  # noqa: F401  (imported to register them here)
    _quiet_urllib3,
    admin_kube,
    controller,
    crd,
    ips_cleanup,
    k,
    start_controller,
)
