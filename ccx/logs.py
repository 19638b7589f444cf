"""
Log output: text or one JSON object per line, filtered by level.
"""

import json
from datetime import datetime, timezone
from typing import IO, Any, Callable, Dict, Optional, Sequence

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
)

from ccx.redaction import Redactor

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}

# Keys of legacy (twisted.python.log) events that repeat what the record
# already says.
_LEGACY_KEYS = {"message", "isError", "format", "time", "why", "failure", "log_legacy"}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def event_as_json_line(event: Dict[str, Any]) -> str:
    """
    One log event as a JSON object on one line: C{time}, C{level},
    C{namespace}, C{message}, the event's own fields, and a C{traceback}
    when it carries a failure.
    """
    level = event.get("log_level", LogLevel.info)
    record: Dict[str, Any] = {
        "time": datetime.fromtimestamp(
            event.get("log_time") or 0, timezone.utc
        ).isoformat(timespec="milliseconds"),
        "level": level.name,
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in record:
            continue
        record[key] = _jsonable(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False) + "\n"


def _redacting(
    format_event: Callable[[Dict[str, Any]], Optional[str]], redact: Redactor
) -> Callable[[Dict[str, Any]], Optional[str]]:
    def redacted(event: Dict[str, Any]) -> Optional[str]:
        text = format_event(event)
        return redact(text) if text else text

    return redacted


def make_observer(
    log_format: str, log_level: str, out: IO[str], secrets: Sequence[str] = ()
) -> ILogObserver:
    """
    The observer for C{--log-format} and C{--log-level}.

    @param secrets: strings (the token) replaced by C{[redacted]} wherever
        they would be written, in any spelling (L{Redactor}); the values of
        C{token} query parameters and C{Authorization} headers are always
        replaced.
    """
    if log_format == "json":
        format_event = event_as_json_line
    else:
        format_event = lambda event: formatEventAsClassicLogText(event)  # noqa: E731
    observer = FileLogObserver(out, _redacting(format_event, Redactor(secrets)))
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[log_level])
    return FilteringLogObserver(observer, [predicate])

