"""The ``recordforge`` command line: one module per subcommand, each a thin layer."""
