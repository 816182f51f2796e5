"""Prints the directory of this interpreter's sys.path that lies under the
install prefix given as argument (dist-packages/site-packages; the versioned
one first), or nothing. Used by python/meson.build at configure time."""
import os
import sys

prefix = os.path.realpath(sys.argv[1]) + os.sep
dirs = [p for p in sys.path
        if p.startswith(prefix) and os.path.basename(p) in ("dist-packages", "site-packages")]
dirs.sort(key=lambda p: "python3." not in p)
print(dirs[0] if dirs else "")
