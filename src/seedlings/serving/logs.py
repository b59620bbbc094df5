"""Logging for the service: plain lines for people, or one JSON object per line for log collectors."""

from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per record; uvicorn access records get method, path and status fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name}
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, http_version, status = record.args
            entry.update(client=client, method=method, path=path, http_version=http_version, status=status)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_config(json_logs: bool, level: str = "info") -> dict:
    """A ``logging.config.dictConfig`` for uvicorn and our loggers."""
    if json_logs:
        formatter = {"()": "seedlings.serving.logs.JsonFormatter"}
        access = formatter
    else:
        formatter = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
        access = {"()": "uvicorn.logging.AccessFormatter",
                  "fmt": '%(asctime)s %(levelname)s access: %(client_addr)s "%(request_line)s" '
                         '%(status_code)s'}
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter, "access": access},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"},
                     "access": {"class": "logging.StreamHandler", "formatter": "access",
                                "stream": "ext://sys.stdout"}},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
                    "uvicorn.error": {"level": level},
                    "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
                    "seedlings": {"handlers": ["default"], "level": level, "propagate": False}},
    }
