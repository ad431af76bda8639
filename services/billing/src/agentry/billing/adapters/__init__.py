"""One module per backend billing can run on."""
