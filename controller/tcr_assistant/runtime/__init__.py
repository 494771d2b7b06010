"""The controller's runtime: work queue, reflector, leader election, HTTP server.

Nothing here knows about ImagePullSecrets; `tcr_assistant.controller` wires these parts to the
controller's decisions (`tcr_assistant.reconcile`).
"""
