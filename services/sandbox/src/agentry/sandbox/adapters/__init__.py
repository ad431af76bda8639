"""One module per backend: `local` (processes on this host) and `sql` (the sandboxes table)."""
