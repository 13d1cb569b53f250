"""Server-rendered portal pages (filled in by the next commit)."""


def install(app) -> None:
    pass
