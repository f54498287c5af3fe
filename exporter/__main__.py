"""``python -m exporter``: the command line (exporter/cli.py); ``twilio ...`` connects Twilio (exporter/subscribe.py)."""

import sys

from exporter import cli


def main(argv: list[str] | None = None) -> int:
    """The exporter, or with ``twilio`` first the command connecting Twilio to it (its own options only)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["twilio"]:
        from exporter import subscribe  # only this command needs it

        return subscribe.run(argv[1:])
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
