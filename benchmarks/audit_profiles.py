"""The audit_log shapes /audit is benchmarked on, and the questions asked of each.

- `month`: 5 million rows spread over 30 days (about 170 k a day), the sandbox's mix of actions,
  about 8 % of logins failing, a brute-force attack of 300 failed logins in the last hour.
- `attack`: the same number of rows, half of them in the last 24 hours: a credential-stuffing day.
  A third of that day's logins fail, from thousands of addresses in a few ranges, against tens of
  thousands of usernames (most of them not accounts: no user id); rate limiting fires all day.

Each profile is generated with INSERT ... SELECT generate_series (seeded: the same rows each time).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import asyncpg

USERS = 5000
SPAN_DAYS = 30
# Credential stuffing: usernames from a leaked list (user0..user4999 are accounts, the rest are not)
# tried from addresses in 16 /24 ranges of 250 addresses each (every tenth address is IPv6).
LEAKED_USERNAMES = 40_000
ATTACK_ADDRESSES = 4000
ATTACK_RANGE = "185.220.101.0/24"
ATTACK_ADDRESS = "185.220.101.42"

# One statement generates the background: time-ordered over $2 days ending $4 seconds ago (an
# append-only log), users skewed (a few very active), the sandbox's mix of actions, about 8 % of
# logins failing.
GENERATE = """
INSERT INTO audit_log (timestamp, action, user_id, username, ip_address, details)
SELECT ts, action, md5('user' || u)::uuid, 'user' || u,
       CASE WHEN u % 10 = 0 THEN ('2001:db8:' || to_hex(u) || '::' || (1 + g % 3))::inet
            ELSE ('10.' || (u / 250) || '.' || (u % 250) || '.' || (1 + g % 3))::inet END,
       jsonb_build_object('request_id', md5(g::text), 'trace_id', md5('t' || g),
                          'user_agent', 'Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0')
       || CASE action
            WHEN 'LOGIN' THEN CASE WHEN r3 < 0.08
                 THEN '{"success": false, "method": "password", "reason": "invalid_password"}'::jsonb
                 ELSE '{"success": true, "method": "password"}'::jsonb END
            WHEN 'MFA_CHALLENGE_FAILED' THEN jsonb_build_object(
                 'reason', (ARRAY['invalid_code', 'expired_code', 'replayed_code'])[1 + g % 3])
            WHEN 'RATE_LIMIT_EXCEEDED' THEN
                 '{"reason": "login_attempts_exceeded", "endpoint": "/api/v1/auth/login", "limit": 5}'::jsonb
            WHEN 'PERMISSION_DENIED' THEN jsonb_build_object(
                 'required_permission', 'projects:delete', 'resource_id', md5('r' || g)::uuid)
            ELSE '{}'::jsonb END
FROM (
    SELECT g, r3,
           now() - make_interval(secs => $4) - make_interval(days => $2)
               + make_interval(secs => g * ($2 * 86400.0 / $1)) AS ts,
           floor($3 * r1 * r1)::int AS u,
           CASE WHEN r2 < 0.30 THEN 'LOGIN' WHEN r2 < 0.40 THEN 'LOGOUT'
                WHEN r2 < 0.52 THEN 'MFA_CHALLENGE_SUCCESS' WHEN r2 < 0.55 THEN 'MFA_CHALLENGE_FAILED'
                WHEN r2 < 0.62 THEN 'PROJECT_CREATE' WHEN r2 < 0.72 THEN 'PROJECT_UPDATE'
                WHEN r2 < 0.74 THEN 'PROJECT_DELETE' WHEN r2 < 0.86 THEN 'FILE_UPLOAD'
                WHEN r2 < 0.94 THEN 'FILE_DOWNLOAD' WHEN r2 < 0.97 THEN 'PERMISSION_DENIED'
                WHEN r2 < 0.99 THEN 'RATE_LIMIT_EXCEEDED' ELSE 'PASSWORD_CHANGE' END AS action
    FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3 FROM generate_series(1, $1) AS g) AS drawn
) AS rows
"""

# The credential-stuffing day: $1 rows over the last 24 hours. Logins are 60 % of the day and a
# third of them fail; failed logins and rate-limit hits come from the attack's addresses and name
# leaked usernames; everything else is the platform's users at their usual addresses.
ATTACK_DAY = """
INSERT INTO audit_log (timestamp, action, user_id, username, ip_address, details)
SELECT ts, action,
       CASE WHEN u < $2 THEN md5('user' || u)::uuid END, 'user' || u,
       CASE WHEN NOT attacking THEN
                CASE WHEN u % 10 = 0 THEN ('2001:db8:' || to_hex(u) || '::' || (1 + g % 3))::inet
                     ELSE ('10.' || (u / 250) || '.' || (u % 250) || '.' || (1 + g % 3))::inet END
            WHEN a % 10 = 0 THEN ('2a03:b0c0:' || to_hex(a) || '::1')::inet
            ELSE ('185.220.' || (100 + a / 250) || '.' || (1 + a % 250))::inet END,
       jsonb_build_object('request_id', md5('day' || g), 'trace_id', md5('tday' || g),
                          'user_agent', CASE WHEN attacking THEN 'python-requests/2.31.0'
                                        ELSE 'Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0' END)
       || CASE action
            WHEN 'LOGIN' THEN CASE WHEN attacking
                 THEN '{"success": false, "method": "password", "reason": "invalid_password"}'::jsonb
                 ELSE '{"success": true, "method": "password"}'::jsonb END
            WHEN 'MFA_CHALLENGE_FAILED' THEN jsonb_build_object(
                 'reason', (ARRAY['invalid_code', 'expired_code', 'replayed_code'])[1 + g % 3])
            WHEN 'RATE_LIMIT_EXCEEDED' THEN
                 '{"reason": "login_attempts_exceeded", "endpoint": "/api/v1/auth/login", "limit": 5}'::jsonb
            WHEN 'PERMISSION_DENIED' THEN jsonb_build_object(
                 'required_permission', 'projects:delete', 'resource_id', md5('r' || g)::uuid)
            ELSE '{}'::jsonb END
FROM (
    SELECT g, action, attacking,
           now() - interval '24 hours' + make_interval(secs => g * (86400.0 / $1)) AS ts,
           CASE WHEN attacking THEN floor($3 * r1)::int ELSE floor($2 * r1 * r1)::int END AS u,
           floor($4 * r4)::int AS a
    FROM (
        SELECT g, r1, r4, action,
               (action = 'LOGIN' AND r3 < 1.0 / 3) OR action = 'RATE_LIMIT_EXCEEDED' AS attacking
        FROM (
            SELECT g, r1, r3, r4,
                   CASE WHEN r2 < 0.60 THEN 'LOGIN' WHEN r2 < 0.68 THEN 'LOGOUT'
                        WHEN r2 < 0.76 THEN 'MFA_CHALLENGE_SUCCESS' WHEN r2 < 0.80 THEN 'MFA_CHALLENGE_FAILED'
                        WHEN r2 < 0.86 THEN 'RATE_LIMIT_EXCEEDED' WHEN r2 < 0.89 THEN 'PERMISSION_DENIED'
                        WHEN r2 < 0.91 THEN 'PROJECT_CREATE' WHEN r2 < 0.94 THEN 'PROJECT_UPDATE'
                        WHEN r2 < 0.97 THEN 'FILE_UPLOAD' ELSE 'FILE_DOWNLOAD' END AS action
            FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4
                  FROM generate_series(1, $1) AS g) AS drawn
        ) AS acted
    ) AS marked
) AS rows
"""

# A brute-force attack in the last hour, as the sandbox seeds one: failed logins from six addresses.
BRUTE_FORCE = """
INSERT INTO audit_log (timestamp, action, user_id, username, ip_address, details)
SELECT now() - make_interval(secs => 3600 - i * 10), 'LOGIN', md5('user42')::uuid, 'user42',
       (ARRAY['192.168.1.100', '185.220.101.42', '45.155.205.233', '2a03:b0c0:3:d0::1a51',
              '203.0.113.9', '198.51.100.77'])[1 + i % 6]::inet,
       jsonb_build_object('request_id', md5('attack' || i), 'success', false, 'reason', 'invalid_password')
FROM generate_series(1, 300) AS i
"""
BRUTE_FORCE_ROWS = 300


@dataclass(frozen=True)
class Profile:
    """One shape of audit_log: its name, what it is, and how to generate it."""

    name: str
    description: str
    database: str

    def expected_rows(self, rows: int) -> int:
        """Return how many rows the table holds once generated with `rows`."""
        return rows + BRUTE_FORCE_ROWS

    async def generate(self, conn: asyncpg.Connection, rows: int) -> None:
        """Fill an empty audit_log (random draws seeded: the same table every time)."""
        await conn.execute("SELECT setseed(0.42)")
        if self.name == "month":
            await conn.execute(GENERATE, rows, SPAN_DAYS, USERS, 0.0)
        else:
            day = rows // 2
            await conn.execute(GENERATE, rows - day, SPAN_DAYS - 1, USERS, 86400.0)
            await conn.execute(ATTACK_DAY, day, USERS, LEAKED_USERNAMES, ATTACK_ADDRESSES)
        await conn.execute(BRUTE_FORCE)


PROFILES = {
    "month": Profile("month", "5 M rows over 30 days (about 170 k a day)", "chatops_bench_audit"),
    "attack": Profile(
        "attack",
        "half the rows in the last 24 h: credential stuffing, a third of logins failing",
        "chatops_bench_audit_attack",
    ),
}


@dataclass
class Case:
    """One question: /audit's arguments, and the runbook's SQL for the same question."""

    label: str
    tokens: list[str]
    runbook_sql: str


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _by_ip(label: str, address: str, operator: str = "=") -> Case:
    return Case(
        label,
        ["ip", address],
        "SELECT action, user_id, username, timestamp, details FROM audit_log"
        f" WHERE ip_address {operator} '{address}' AND timestamp > NOW() - INTERVAL '24 hours'"
        " ORDER BY timestamp DESC;",
    )


def cases(profile: str, request_id: str) -> list[Case]:
    """Return the questions asked of a generated table (user ids are md5-derived, as generated)."""
    heavy, medium = "user0", "user700"
    medium_id = str(uuid.UUID(_md5(medium)))
    found: list[Case] = [
        Case(
            "user <username> (busiest user)",
            ["user", heavy],
            f"SELECT action, ip_address, timestamp, details FROM audit_log WHERE username = '{heavy}'"
            " AND timestamp > NOW() - INTERVAL '24 hours' ORDER BY timestamp DESC;",
        ),
        Case(
            "user <user id>",
            ["user", medium_id],
            f"SELECT action, ip_address, timestamp, details FROM audit_log WHERE user_id = '{medium_id}'"
            " AND timestamp > NOW() - INTERVAL '24 hours' ORDER BY timestamp DESC;",
        ),
    ]
    if profile == "attack":
        found += [
            _by_ip("ip <attacking address>", ATTACK_ADDRESS),
            _by_ip("ip <attacking /24>", ATTACK_RANGE, "<<="),
            _by_ip("ip <CIDR /16 (the attack's)>", "185.220.0.0/16", "<<="),
        ]
    else:
        found += [
            _by_ip("ip <IPv4 address>", "10.0.1.1"),  # user1 (user0, like every tenth user, is IPv6)
            _by_ip("ip <IPv6 address>", "2001:db8:0::1"),
            _by_ip("ip <CIDR /24>", "10.1.1.0/24", "<<="),
            _by_ip("ip <CIDR /16>", "10.1.0.0/16", "<<="),
        ]
    found += [
        Case(
            "request <request id>",
            ["request", request_id, "since=30d"],
            f"SELECT * FROM audit_log WHERE details::text LIKE '%{request_id}%' ORDER BY timestamp;",
        ),
        Case(
            "failed-logins",
            ["failed-logins"],
            "SELECT username, COUNT(*) as failed_attempts, array_agg(DISTINCT ip_address) as ips"
            " FROM audit_log WHERE action = 'LOGIN' AND details->>'success' = 'false'"
            " AND timestamp > NOW() - INTERVAL '24 hours' GROUP BY username HAVING COUNT(*) > 5"
            " ORDER BY failed_attempts DESC;",
        ),
        Case(
            "mfa since=1h",
            ["mfa", "since=1h"],
            "SELECT user_id, username, ip_address, timestamp, details->>'reason' as failure_reason"
            " FROM audit_log WHERE action = 'MFA_CHALLENGE_FAILED'"
            " AND timestamp > NOW() - INTERVAL '1 hour' ORDER BY timestamp DESC;",
        ),
        Case(
            "mfa",
            ["mfa"],
            "SELECT user_id, username, ip_address, timestamp, details->>'reason' as failure_reason"
            " FROM audit_log WHERE action = 'MFA_CHALLENGE_FAILED'"
            " AND timestamp > NOW() - INTERVAL '24 hours' ORDER BY timestamp DESC;",
        ),
        Case(
            "security",
            ["security"],
            "SELECT action, user_id, ip_address, timestamp, details FROM audit_log"
            " WHERE action IN ('LOGIN', 'MFA_CHALLENGE_FAILED', 'RATE_LIMIT_EXCEEDED', 'PERMISSION_DENIED')"
            " AND timestamp > NOW() - INTERVAL '24 hours' ORDER BY timestamp DESC;",
        ),
    ]
    return found
