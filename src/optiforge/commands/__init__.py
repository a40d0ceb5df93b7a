"""Extra CLI commands: each module registers its own with ``optiforge.cli.command``."""
