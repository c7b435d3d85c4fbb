"""redisrepl: keep a namespace of a local Redis in step with a remote Redis behind Webdis."""

__version__ = "0.1.0"
