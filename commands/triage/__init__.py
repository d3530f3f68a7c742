"""`/triage`: the runbook's diagnostic checklist run concurrently, and log lookups by trace, request or time.

The checks come from the declarative checklist (commands/triage_checks.yaml); each runs under its
own timeout and turns into a finding: ok, warn, critical, or unknown when its source did not answer.
"""

from commands.triage.checks_database import QUERY_SHOWN
from commands.triage.command import run
from commands.triage.judging import advice_of, overall
from commands.triage.lookups import LOOKUP_AUDIT_LIMIT, describe_record, run_logs, run_lookup
from commands.triage.models import (
    STATUS_ORDER,
    AdviceShown,
    Evidence,
    Finding,
    LogEntry,
    LogsReport,
    LookupReport,
    Scan,
    Status,
    TriageReport,
)
from commands.triage.orchestration import check_timeout, new_run, run_check, run_triage
from commands.triage.sources import Measurement, TriageRun, TriageSources, utc_now
from commands.triage_grammar import (
    DEFAULT_LOGS_LIMIT,
    DEFAULT_LOGS_SINCE,
    MAX_LOGS_LIMIT,
    MAX_LOGS_SINCE,
    MAX_WINDOW,
    MIN_WINDOW,
    USAGE,
    ChangesArgs,
    LogsArgs,
    LookupArgs,
    TriageArgs,
    TriageCommand,
    parse,
    parse_request_id,
    parse_trace_id,
    unparse,
)

__all__ = [
    "DEFAULT_LOGS_LIMIT",
    "DEFAULT_LOGS_SINCE",
    "LOOKUP_AUDIT_LIMIT",
    "MAX_LOGS_LIMIT",
    "MAX_LOGS_SINCE",
    "MAX_WINDOW",
    "MIN_WINDOW",
    "QUERY_SHOWN",
    "STATUS_ORDER",
    "USAGE",
    "AdviceShown",
    "ChangesArgs",
    "Evidence",
    "Finding",
    "LogEntry",
    "LogsArgs",
    "LogsReport",
    "LookupArgs",
    "LookupReport",
    "Measurement",
    "Scan",
    "Status",
    "TriageArgs",
    "TriageCommand",
    "TriageReport",
    "TriageRun",
    "TriageSources",
    "advice_of",
    "check_timeout",
    "describe_record",
    "new_run",
    "overall",
    "parse",
    "parse_request_id",
    "parse_trace_id",
    "run",
    "run_check",
    "run_logs",
    "run_lookup",
    "run_triage",
    "unparse",
    "utc_now",
]
