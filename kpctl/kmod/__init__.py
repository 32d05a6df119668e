"""kpctl_kmod, the bundled kernel module: its netlink client and its build."""
