"""The ways into the kernel, one module each, behind the interface of base.py.
kpctl/registry.py lists them; nothing else names one."""
