"""What the chart's Helm hooks run: the check, the clean-up, the hosts clean-up."""
