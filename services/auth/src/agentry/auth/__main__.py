"""`python -m agentry.auth` runs the auth service."""

from .main import main

main()
