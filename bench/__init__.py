"""tcr-addon benchmarks: link latency, full reconcile, rotation, idle cost and memory on a local control plane.

Run from the repository root: ``PYTHONPATH=scripts .venv/bin/python -m bench.run [--quick]``.
"""
