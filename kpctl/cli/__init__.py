"""kpctl's command line: main.py holds the commands, kmod.py the `kpctl kmod` group,
output.py what they share. Only this package imports click."""
