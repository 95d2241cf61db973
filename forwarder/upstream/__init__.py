"""Upstream resolver groups: server selection, transports, failover and health."""
