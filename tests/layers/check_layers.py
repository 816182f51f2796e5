"""Fails when a library folder includes a header of a layer above it, or
another folder's internal header (DESIGN.md: arrows point down only; internal
headers stay next to their .c files, base/base.h being the one every layer
may include). A call into a layer above would need such an include: the
build is -Werror, so an undeclared call does not compile."""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1])
# public headers each layer may include (theus/X.h), bottom to top
PUBLIC = {
    "base": {"error", "version"},
    "heavy": {"error", "heavy"},
    "twin": {"error", "heavy", "twin"},
    "workers": {"error", "heavy", "pool"},
    "contracts": {"error", "heavy", "contract"},
    "engine": {"error", "heavy", "twin", "pool", "contract", "engine"},
    "pipeline": {"error", "version", "heavy", "twin", "contract", "engine", "pipeline"},
    "cluster": {"error", "heavy", "twin", "contract", "engine", "pipeline", "cluster"},
    "cli": {"error", "version", "heavy", "twin", "contract", "engine", "pipeline", "theus", "pool", "cluster"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]', re.M)
bad = 0
for layer, allowed in PUBLIC.items():
    folder = ROOT / layer
    own = {p.name for p in folder.glob("*.h")}
    for src in sorted(list(folder.glob("*.c")) + list(folder.glob("*.h"))):
        for quote, inc in INCLUDE.findall(src.read_text(encoding="utf-8")):
            if inc.startswith("theus/"):
                name = inc[len("theus/"):-2]
                if name not in allowed:
                    print(f"{src.relative_to(ROOT)}: includes <{inc}>, a layer above {layer}/")
                    bad += 1
            elif quote == '"' and inc not in own | {"base.h"}:
                print(f"{src.relative_to(ROOT)}: includes \"{inc}\", an internal header of another folder")
                bad += 1
print(f"layers: {bad} violation(s) in {len(PUBLIC)} library folders")
sys.exit(1 if bad else 0)
