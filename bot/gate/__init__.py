"""The one gate of destructive commands: roles, MFA, approvals, the operation lock, the audit trail."""
