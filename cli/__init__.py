"""The `netshift` command."""
