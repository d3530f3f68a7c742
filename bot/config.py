"""Typed settings for the bot, read from the environment and an optional `.env` file."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from adapters.severity import SEVERITIES, Severity
from commands.base import UsageError, parse_duration
from commands.incident_contacts import RUNBOOK_CONTACTS, Contact

# The sandbox keeps its sockets, data and logs here; the defaults below point at it.
DEFAULT_SANDBOX_DIR = Path("/tmp/chatops-sandbox")


def _env(name: str) -> Any:
    """Read an optional secret from exactly one environment variable, without the prefix."""
    return Field(default=None, validation_alias=AliasChoices(name))


class ConfigError(Exception):
    """Raised when a setting is invalid; the message names the setting."""


class Settings(BaseSettings):
    """Every setting of the bot; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix="CHATOPS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    environment: str = "sandbox"

    # The platform (3dPot) and its dependencies.
    platform_database_url: str = "postgresql://postgres@127.0.0.1:5432/chatops_platform"
    redis_url: str = "redis://127.0.0.1:6379/0"
    api_url: str = "http://127.0.0.1:18080"
    prometheus_url: str = "http://127.0.0.1:9090"
    s3_endpoint_url: str = "http://127.0.0.1:8333"
    s3_bucket: str = "3dpot-platform"
    s3_region: str = "us-east-1"
    aws_access_key_id: str = Field(
        default="chatops-sandbox", validation_alias=AliasChoices("AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: SecretStr = Field(
        default=SecretStr("chatops-sandbox-secret"),
        validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"),
    )
    docker_host: str = Field(
        default=f"unix://{DEFAULT_SANDBOX_DIR}/podman.sock",
        validation_alias=AliasChoices("DOCKER_HOST"),
    )
    compose_project: str = "3dpot"
    backend_service: str = "backend"
    log_paths: Annotated[list[str], NoDecode] = [f"{DEFAULT_SANDBOX_DIR}/logs/*.log*"]

    # The bot's own state (approvals, MFA, incidents, audit trail); never the platform's database.
    state_database_url: str = "postgresql://postgres@127.0.0.1:5432/chatops_state"
    # The role that owns the bot's tables and runs its migrations (none: the runtime role above).
    # With one set, the runtime role may only read and append the audit trail, never alter it.
    state_owner_database_url: str | None = None
    # Where the audit trail's head is anchored after every append, outside the bot's database:
    # s3://bucket/prefix (on the backup endpoint, else the platform's) or a directory; "" for none.
    trail_anchor_store: str = "s3://chatops-trail/anchors"

    # Slack.
    slack_bot_token: SecretStr | None = _env("SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = _env("SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = _env("SLACK_SIGNING_SECRET")
    slack_api_url: str = "https://slack.com/api/"

    # GitHub (RCA issues).
    github_token: SecretStr | None = _env("GITHUB_TOKEN")
    github_repo: str | None = None
    github_api_url: str = "https://api.github.com"
    # GitHub's secondary rate limits name a wait (retry-after): waited out when no longer than this.
    github_max_retry_wait_seconds: float = Field(default=10.0, ge=0, le=120)

    # Incidents, alert intake and RCA drafts.
    # The channel alerts are posted to, and the terminal's channel for `chatops incident`.
    incident_channel: str | None = None
    # The runbook's emergency contacts, as JSON: [{"role": ..., "area": ..., "contact": ...}, ...].
    incident_contacts: list[Contact] = Field(default_factory=lambda: list(RUNBOOK_CONTACTS))
    # Bearer token Alertmanager must send to POST /alerts (http_config.authorization); none: refuse all.
    alertmanager_token: SecretStr | None = None
    # A firing alert of this severity or worse (info < warning < error < critical) triages itself
    # into its thread; "none" turns it off. Once per alert group within the cool-down.
    alert_triage_severity: str = Field(default="critical", pattern=r"^(none|info|warning|error|critical)$")
    alert_triage_cooldown_seconds: int = Field(default=600, ge=0, le=86400)
    # Language of RCA drafts (templates/rca.<language>.md.j2): en or pt.
    rca_language: str = Field(default="en", pattern=r"^[a-z]{2}$")
    # Where the RCA templates are; empty: found beside the code or in the working directory.
    templates_dir: Path | None = None
    # The incident's workspace: a channel of its own (#<prefix>-<n>-<title>), or the channel it was
    # declared in (in-place); `/incident declare place=` overrides it. Its own channel is private
    # when asked (scope groups:write), public otherwise (channels:manage).
    incident_workspace: Literal["dedicated", "in-place"] = "dedicated"
    incident_channel_prefix: str = Field(default="inc", pattern=r"^[a-z0-9][a-z0-9_-]{0,19}$")
    incident_channel_private: bool = False
    # The responders' user group (S…), invited to each incident channel with the declarer and commander.
    incident_responder_group: str | None = Field(default=None, pattern=r"^S[A-Z0-9]{2,}$")
    # The stakeholders' channel: one announcement per incident there, edited as it changes.
    incident_stakeholder_channel: str | None = Field(default=None, pattern=r"^[CG][A-Z0-9]{2,}$")
    # The runbook's address, bookmarked in every incident channel (none: not bookmarked).
    runbook_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    # Update reminders: the commander is nudged when an open incident of that severity had no update
    # for so long. `P1=30m,P2=60m`; a severity not listed (or `none`) gets no reminders.
    incident_update_reminders: str = "P1=30m,P2=60m"
    # How often each replica looks for a reminder that is due (each is sent once, by one replica).
    incident_reminder_poll_seconds: float = Field(default=30.0, ge=1, le=3600)
    # Labels of the GitHub issues filed for follow-ups (with the RCA).
    followup_labels: Annotated[list[str], NoDecode] = ["follow-up"]

    # Encrypts secrets at rest in the bot's database (TOTP seeds).
    secret_key: SecretStr | None = None

    # Who may do what: Slack user ids (U...) or user group ids (S...), or * for everyone.
    viewers: Annotated[list[str], NoDecode] = ["*"]
    responders: Annotated[list[str], NoDecode] = ["*"]
    operators: Annotated[list[str], NoDecode] = []
    mfa_admins: Annotated[list[str], NoDecode] = []
    destructive_channels: Annotated[list[str], NoDecode] = ["*"]
    two_person_commands: Annotated[list[str], NoDecode] = ["restore"]
    # The operator's identity at the terminal (a Slack user id), for the gate.
    cli_user: str | None = None
    approval_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    lock_lease_seconds: float = Field(default=60.0, ge=5, le=3600)

    # /audit: bounds on what one query may ask of the platform's audit_log.
    audit_statement_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    audit_default_limit: int = Field(default=20, ge=1, le=1000)
    audit_max_limit: int = Field(default=200, ge=1, le=1000)
    audit_max_window_days: int = Field(default=30, ge=1, le=3650)
    audit_export_max_rows: int = Field(default=1_000_000, ge=1, le=100_000_000)
    # A file in a Slack thread should stay one people can open, so Slack exports have a cap (bytes).
    audit_export_slack_max_bytes: int = Field(default=50_000_000, ge=1024, le=1_000_000_000)
    # How much one /audit answer reads: every figure exact up to audit_exact_rows matching rows;
    # beyond, breakdowns estimated (≈) from a sample of about audit_sample_rows rows, and totals exact
    # from the covering index alone up to audit_index_rows rows, estimated beyond.
    audit_exact_rows: int = Field(default=20_000, ge=0, le=10_000_000)
    audit_sample_rows: int = Field(default=5_000, ge=100, le=1_000_000)
    audit_index_rows: int = Field(default=100_000, ge=0, le=100_000_000)
    # Where a Slack export waits on disk until it is uploaded (none: the system's temp directory).
    audit_export_spool_dir: Path | None = None
    # Expensive reads and the role they need (viewer, responder or operator): any PromQL other than
    # the named graphs (5xx, p95, a PromQL check id of the triage checklist), and an export whose
    # limit= (default audit_export_max_rows) is above audit_export_large_rows.
    promql_role: str = Field(default="responder", pattern=r"^(viewer|responder|operator)$")
    audit_export_large_rows: int = Field(default=10_000, ge=0, le=100_000_000)
    audit_export_large_role: str = Field(default="responder", pattern=r"^(viewer|responder|operator)$")

    # /rollback and /restart: the backend's image repository, which of its tags are versions, the
    # environment variables `/rollback flag` may change, and how long each step may take.
    backend_image: str = "3dpot-backend"
    rollback_version_pattern: str = r"^v\d+\.\d+\.\d+$"
    rollback_flags: Annotated[list[str], NoDecode] = ["MFA_ENABLED", "RATE_LIMIT_ENABLED"]
    rollback_health_timeout_seconds: float = Field(default=60.0, gt=0, le=1800)
    rollback_stop_timeout_seconds: int = Field(default=10, ge=1, le=600)
    engine_operation_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    # /triage: the checklist file (none: commands/triage_checks.yaml), validated at start-up, and
    # each check's time limit (none: the checklist's `timeout_seconds`; a check's own wins).
    triage_checklist: Path | None = Field(default=None, validate_default=True)
    triage_check_timeout_seconds: float | None = Field(default=None, gt=0, le=120)

    # /backup and /restore: where backups go (a directory, or s3://bucket/prefix on the endpoint
    # below, default the platform's), which buckets they hold (none: s3_bucket), and their limits.
    backup_store: str = f"{DEFAULT_SANDBOX_DIR}/backups"
    backup_s3_endpoint_url: str | None = None
    backup_buckets: Annotated[list[str], NoDecode] = []
    backup_work_dir: Path | None = None
    backup_concurrency: int = Field(default=8, ge=1, le=64)
    backup_timeout_seconds: float = Field(default=3600.0, gt=0, le=86400)
    backup_transfer_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    backup_keep_days: int = Field(default=30, ge=1, le=3650)
    restore_lock_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    restore_health_timeout_seconds: float = Field(default=60.0, gt=0, le=1800)
    restore_stop_timeout_seconds: int = Field(default=30, ge=1, le=600)

    # /graph and the graph /triage attaches: the window when since= is not given (like 1h), the
    # resolution (one point per step, widened for long windows), and each range query's time limit.
    graph_window: timedelta = Field(default=timedelta(hours=1), gt=timedelta(0), le=timedelta(days=30))
    graph_step_seconds: float = Field(default=15.0, ge=1, le=3600)
    graph_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    # Behaviour.
    dependency_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=3000, ge=1, le=65535)
    # On SIGTERM, how long to wait for acknowledged commands to finish before exiting.
    shutdown_drain_seconds: float = Field(default=30.0, ge=0, le=600)
    log_level: str = "INFO"
    sandbox_dir: Path = DEFAULT_SANDBOX_DIR
    # The sandbox's alerting: its Alertmanager (fed by its Prometheus with monitoring/alerts.yml),
    # the webhook it posts to with CHATOPS_ALERTMANAGER_TOKEN as bearer token (empty: this bot's
    # http://127.0.0.1:{http_port}/alerts), the `for:` every rule gets there and the window of every
    # rate in the rules (empty: the rules' own). The faulty release v2.0.6 fails /health, or passes
    # it and answers 5xx under traffic.
    sandbox_alertmanager_url: str = Field(default="http://127.0.0.1:9093", pattern=r"^https?://\S+$")
    sandbox_alert_webhook_url: str = Field(default="", pattern=r"^(https?://\S+)?$")
    sandbox_alert_for: str = Field(default="30s", pattern=r"^(\d+[smh])*$")
    sandbox_alert_rate_window: str = Field(default="1m", pattern=r"^(\d+[smh])*$")
    sandbox_faulty_release: str = Field(default="fails-health", pattern=r"^(fails|passes)-health$")

    @field_validator(
        "log_paths",
        "viewers",
        "responders",
        "operators",
        "mfa_admins",
        "destructive_channels",
        "two_person_commands",
        "backup_buckets",
        "followup_labels",
        mode="before",
    )
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "incident_channel",
        "incident_responder_group",
        "incident_stakeholder_channel",
        "runbook_url",
        "templates_dir",
        "alertmanager_token",
        "audit_export_spool_dir",
        "state_owner_database_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `NAME=` in .env.example means "not set", not an empty channel, folder or token.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("platform_database_url", "state_database_url", "state_owner_database_url", mode="after")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("api_url", "prometheus_url", "s3_endpoint_url", "slack_api_url", "github_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("backup_s3_endpoint_url", "backup_work_dir", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("backup_s3_endpoint_url")
    @classmethod
    def _optional_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("backup_store")
    @classmethod
    def _backup_store(cls, value: str) -> str:
        if value.startswith("s3://"):
            if not value[len("s3://") :].split("/", 1)[0]:
                raise ValueError("s3:// must name a bucket: s3://bucket/prefix")
        elif "://" in value and not value.startswith("file://"):
            raise ValueError("must be a directory, file:///directory or s3://bucket/prefix")
        return value

    @field_validator("rollback_flags", mode="before")
    @classmethod
    def _flag_names(cls, value: Any) -> Any:
        names = value
        if isinstance(value, str):
            names = [part.strip() for part in value.split(",") if part.strip()]
        for name in names or []:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", str(name)):
                raise ValueError(f"{str(name)[:40]!r} is not an environment variable name")
        return names

    @field_validator("rollback_version_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return value

    @field_validator("triage_checklist", "triage_check_timeout_seconds", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("triage_checklist")
    @classmethod
    def _triage_checklist(cls, value: Path | None) -> Path | None:
        # A broken checklist stops the bot at start-up, naming the entry, not at the first /triage.
        # The packaged one is checked by the tests: reading it here would slow every command's start.
        if value is None:
            return value
        from commands.triage_checklist import ChecklistError, load_checklist

        try:
            load_checklist(value)
        except ChecklistError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("graph_window", mode="before")
    @classmethod
    def _graph_window(cls, value: Any) -> Any:
        # Written like the commands' since=: 30m, 1h, 24h.
        if isinstance(value, str) and re.fullmatch(r"\s*\d+[smhd]\s*", value):
            try:
                return parse_duration(value, maximum=timedelta(days=30))
            except UsageError as error:
                raise ValueError(error.message) from None
        return value

    @field_validator("incident_update_reminders")
    @classmethod
    def _reminders(cls, value: str) -> str:
        reminder_intervals(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @property
    def reminder_intervals(self) -> dict[Severity, timedelta | None]:
        """Return each severity's update-reminder interval (None: no reminders)."""
        return reminder_intervals(self.incident_update_reminders)

    @property
    def socket_mode(self) -> bool:
        """Return whether Slack's requests come over Socket Mode (an app-level token is set)."""
        return self.slack_app_token is not None

    def masked(self) -> dict[str, str]:
        """Return every effective setting by its environment name, secrets masked."""
        shown: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            env_name = _env_name(name, field.validation_alias)
            if isinstance(value, SecretStr):
                text = "********" if value.get_secret_value() else ""
            elif value is None:
                text = ""
            elif isinstance(value, list):
                text = ",".join(str(item) for item in value)
            else:
                text = _mask_url_password(str(value))
            shown[env_name] = text
        return shown


def reminder_intervals(text: str) -> dict[Severity, timedelta | None]:
    """Read `P1=30m,P2=60m` (a severity not listed: no reminders; `none`: none at all)."""
    intervals: dict[Severity, timedelta | None] = dict.fromkeys(SEVERITIES)
    if text.strip().lower() in ("", "none"):
        return intervals
    for part in text.split(","):
        key, _, raw = part.strip().partition("=")
        severity = next((item for item in SEVERITIES if item == key.strip().upper()), None)
        if severity is None or not raw.strip():
            raise ValueError(f"{part.strip()[:40]!r}: write P1=30m,P2=60m (P1..P4, a duration each)")
        if raw.strip().lower() in ("none", "0", "off"):
            intervals[severity] = None
            continue
        try:
            intervals[severity] = parse_duration(raw.strip(), maximum=timedelta(days=7))
        except UsageError as error:
            raise ValueError(f"{severity}: {error.message}") from None
    return intervals


def _env_name(field_name: str, alias: Any) -> str:
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str):
            return first
    return f"CHATOPS_{field_name.upper()}"


# Query parameters that carry secrets in connection URLs (libpq's `password`, S3-style keys, tokens).
_SECRET_PARAMETERS = re.compile(
    r"([?&](?:password|passwd|pwd|sslpassword|secret|token|access_token|api_key|apikey|key)=)[^&#]*",
    re.IGNORECASE,
)


def _mask_url_password(text: str) -> str:
    """Hide secrets in a URL: `scheme://user:password@host` and `?password=...` alike."""
    if "://" not in text:
        return text
    text = _SECRET_PARAMETERS.sub(r"\1********", text)
    scheme, rest = text.split("://", 1)
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return text
    credentials, host = authority.rsplit("@", 1)
    if ":" in credentials:
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:********@{host}{slash}{path}"
    return text


def load_settings(**overrides: Any) -> Settings:
    """Load settings, turning a validation failure into a message that names the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            field_info = Settings.model_fields.get(field)
            name = _env_name(field, field_info.validation_alias if field_info else None)
            problems.append(f"{name}: {item['msg']}")
        raise ConfigError("invalid setting " + "; ".join(problems)) from None
