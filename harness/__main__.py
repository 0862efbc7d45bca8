"""`python -m harness` is the `harness` command."""

from harness.cli import run

if __name__ == "__main__":
    run()
