"""The local development cluster: real control plane, node, demo, probes and sample data."""
