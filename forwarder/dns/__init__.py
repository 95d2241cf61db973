"""DNS vocabulary: wire format, messages, names, network sets and reply reading."""
