"""`python -m viz ...`: one module per subcommand over viz.cli.common; viz.cli.main dispatches."""
