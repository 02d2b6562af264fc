"""`python -m runbooks_sandbox serve ...`: the body of the background sandbox process."""

from .cli import sandbox

if __name__ == "__main__":
    sandbox(prog_name="python -m runbooks_sandbox")
