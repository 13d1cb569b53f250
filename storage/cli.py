"""Storage commands mounted on the main CLI."""

COMMANDS: list = []
