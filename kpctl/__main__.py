from kpctl.cli import main

main()
