"""The Kubernetes runtime: API client, reflector, work queue, workers, leader election, manager,
HTTP server, process parts. It imports nothing else of tcr_assistant."""
