"""Subcommand groups of the posenc command line."""
