/* The library's own version (see include/theus/version.h). */
#include "theus/version.h"

unsigned theus_version(void) { return THEUS_VERSION_HEX; }

const char *theus_version_string(void) { return THEUS_VERSION_STRING; }
