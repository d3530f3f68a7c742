"""The runbook's emergency contacts: the settings' default, shown by `/incident contacts`."""

from __future__ import annotations

from commands.base import Model


class Contact(Model):
    """One emergency contact of the runbook: who, for what area, how to reach them."""

    role: str
    area: str
    contact: str


# The runbook's "Contatos de Emergência" table; configuration replaces it (CHATOPS_INCIDENT_CONTACTS).
RUNBOOK_CONTACTS: tuple[Contact, ...] = (
    Contact(role="DevOps Lead", area="Infraestrutura", contact="devops@3dpot.com"),
    Contact(role="Backend Lead", area="API/DB", contact="backend@3dpot.com"),
    Contact(role="Security Lead", area="Incidentes de segurança", contact="security@3dpot.com"),
    Contact(role="On-call (24/7)", area="Produção", contact="oncall@3dpot.com"),
)
