"""The tcr-addon development harness: tools, local control plane, add-on runner."""
