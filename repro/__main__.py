import sys

try:
    from repro.cli import main
except KeyboardInterrupt:  # Ctrl-C while repro is still being imported
    print("repro: interrupted", file=sys.stderr)
    sys.exit(130)

main()
