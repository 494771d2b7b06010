"""Fixtures for the controller's integration tests (defined in controller_fixtures.py, helpers in
controller_support.py)."""

from controller_fixtures import (  # noqa: F401  (imported to register them here)
    _quiet_urllib3,
    admin_kube,
    controller,
    crd,
    ips_cleanup,
    k,
    proxy_kubeconfig,
    start_controller,
)
