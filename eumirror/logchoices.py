"""The log levels and formats the command line offers: apart from `log` because the parser
needs them before structlog (and the asyncio it imports) is worth importing; see `cli.main`."""

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("console", "json", "journal")
