"""`python3 -m kpctl` and the kpctl command. Ctrl-C while kpctl is still loading (a
second or more on an emulated machine) ends it quietly, not with an import traceback."""
import sys


def run() -> None:
    try:
        from kpctl.cli.main import main
    except KeyboardInterrupt:
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
