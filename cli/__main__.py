"""`python -m hairdiff.cli ...`: the `pipeline` command without the console script."""
from hairdiff.cli import main

main()
