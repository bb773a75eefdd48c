"""Example backends: services that push to users and start work on their behalf (docs/backends.md)."""
