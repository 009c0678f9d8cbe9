"""Subcommands of the ``personvl`` command line, one module per area."""
