import sys

from .interrupt import install

install()  # Ctrl-C during the imports below is already one clean line
try:
    from .cli import main
except KeyboardInterrupt:
    sys.stderr.write("edgepack: error: interrupted\n")
    sys.exit(130)

main()
