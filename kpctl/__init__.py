"""kpctl: manage Linux kprobes and kretprobes through tracefs and watch their hits."""
__version__ = "0.1.0"
KPCTL_GROUP = "kpctl"  # the event group of kpctl's probes unless told otherwise
