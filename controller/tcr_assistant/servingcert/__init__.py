"""The webhook's serving certificate: the decision (cryptography, in a helper process) and
the keeper."""
