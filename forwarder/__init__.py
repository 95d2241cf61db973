"""A programmable DNS forwarder for hybrid cloud networks."""

__version__ = "0.1.0"
