"""The jaxsr command-line interface (see :mod:`jaxsr.cli.main`)."""
