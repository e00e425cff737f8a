"""The command-line convention of every tfcxr CLI: one logging set-up with ``--log-level``, and exit codes.

- ``add_log_level(parser)`` adds ``--log-level {DEBUG,INFO,WARNING,ERROR}`` (default INFO; ``-v`` is DEBUG).
- ``run(body, args, logger)`` sets up logging and calls ``body(args)``. A mistake the user made (a missing or
  unreadable file, a bad config, a bad value: ``USER_ERRORS``) is logged as one line naming it and gives exit code
  2, with no traceback (``--log-level DEBUG`` adds it). Anything else propagates with its traceback.

Each CLI keeps ``build_parser()`` and ``main(argv=None) -> int``::

    def main(argv=None) -> int:
        args = build_parser().parse_args(argv)
        return cli.run(_main, args, logger)
"""

from __future__ import annotations

import argparse
import logging

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The errors a user can cause: tfcxr raises ValueError (and its subclasses, e.g. WeightsError, ImageReadError) for
# bad values and configs, and OSError subclasses for paths.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def add_log_level(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--log-level`` (and ``-v`` / ``--verbose`` as a shorthand for DEBUG) to `parser`; returns it."""
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                        help="logging verbosity (default INFO)")
    parser.add_argument("-v", "--verbose", dest="log_level", action="store_const", const="DEBUG",
                        help="same as --log-level DEBUG")
    return parser


def setup_logging(level: str = "INFO") -> None:
    """Give the root logger a handler (unless one exists, e.g. under pytest) and set its level."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)


def run(body, args: argparse.Namespace, logger: logging.Logger) -> int:
    """Set up logging from ``args.log_level``, call ``body(args)`` and map user errors to exit code 2.

    Returns:
        ``body``'s return value (None counts as 0), or 2 after logging a user error in one line.
    """
    setup_logging(getattr(args, "log_level", "INFO"))
    try:
        code = body(args)
    except USER_ERRORS as err:
        logger.error("%s", err, exc_info=logger.isEnabledFor(logging.DEBUG))
        return 2
    return 0 if code is None else int(code)
