"""`python -m forwarder`: the same as the `forwarder` command."""

from forwarder.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
