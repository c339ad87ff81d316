"""Small-scale reproductions; run as `python -m experiments.<name>.<script>`."""
