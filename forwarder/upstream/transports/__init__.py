"""Transports: one exchange of a query with one upstream server, by protocol."""
