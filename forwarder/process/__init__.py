"""The process around a server: daemon, worker supervisor, privileges, sd_notify, collector."""
