"""Entry point of the CrossGuard policy pack; the policies themselves live in infra.evidence."""

from infra.evidence.crossguard import serve

serve()
