"""`python -m agentry.billing` runs the billing service."""

from .main import main

main()
