"""``python -m crm_cli`` runs the CLI."""

from .cli import main

main()
