"""hosts-updater: keeps registry domain -> private IP lines in a node hosts file."""
