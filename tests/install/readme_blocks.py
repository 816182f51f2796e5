"""Checks that every `readme:begin NAME` .. `readme:end NAME` block of the
example files appears verbatim (after dedent) in README.md."""
import re
import sys
import textwrap

readme = open(sys.argv[1], encoding="utf-8").read()
missing = 0
for path in sys.argv[2:]:
    text = open(path, encoding="utf-8").read()
    for name, body in re.findall(r"/\* readme:begin (\S+) \*/\n(.*?)\n\s*/\* readme:end \1 \*/", text, re.S):
        block = textwrap.dedent(body)
        if block not in readme:
            print(f"README.md does not show block '{name}' of {path} as it is built")
            missing += 1
        else:
            print(f"README block '{name}': matches {path}")
sys.exit(1 if missing else 0)
