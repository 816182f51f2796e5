#!/bin/sh
# Writes the pipeline reproducer (200 KB, so generated rather than kept):
# an "if" of a 100000-term sum, which theus_pipeline_load parses and then
# frees with one recursion per term. Usage: make.sh OUT-FILE
exec python3 -c "import sys; sys.stdout.write('{\"steps\": [{\"if\": \"' + '+'.join(['1'] * 100000) + ' == 1\", \"then\": []}]}')" > "${1:?usage: make.sh OUT-FILE}"
