"""TCR Assistant: the tcr-addon controller and its validating webhook."""
