"""Always fails: exits with status 3 and says why on stderr."""
import sys

print("cannot reach the archive at 127.0.0.1:9: connection refused", file=sys.stderr)
sys.exit(3)
