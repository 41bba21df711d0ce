"""The one error type a user of the stack sees for bad input."""

import pulumi


class ConfigError(pulumi.RunError):
    """Bad stack config or catalogue, reported before any resource is registered.

    It derives from `pulumi.RunError` so that under a real `pulumi up` the engine prints the
    message alone (no traceback); the `perfloop-platform` command prints it the same way.
    Each problem names the key, the bad value and what is allowed.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid {source}:\n{lines}")
