"""perfloop-platform: the Perfloop platform on Google Cloud as Pulumi components."""

__version__ = "0.1.0"
