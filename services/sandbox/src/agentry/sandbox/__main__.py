"""`python -m agentry.sandbox`: run the sandbox service."""

from .main import main

main()
