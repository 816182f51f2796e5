/* theus-c — version of the headers and of the library.
 *
 * The macros say which version a program was compiled against; the functions
 * say which library it runs against (they differ when a program built with an
 * older header loads a newer libtheus). meson.build checks that the macros
 * match the project version. */
#ifndef THEUS_VERSION_H
#define THEUS_VERSION_H

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define THEUS_VERSION_MAJOR 0
#define THEUS_VERSION_MINOR 2
#define THEUS_VERSION_PATCH 0
#define THEUS__STR_(x) #x
#define THEUS__STR(x) THEUS__STR_(x)
#define THEUS_VERSION_STRING                                                   \
  THEUS__STR(THEUS_VERSION_MAJOR) "." THEUS__STR(THEUS_VERSION_MINOR) "." THEUS__STR(THEUS_VERSION_PATCH)
/* 0xMMmmpp: comparable with < and >. */
#define THEUS_VERSION_HEX ((THEUS_VERSION_MAJOR << 16) | (THEUS_VERSION_MINOR << 8) | THEUS_VERSION_PATCH)

/* The running library's version as THEUS_VERSION_HEX (0xMMmmpp). */
THEUS_API unsigned theus_version(void);

/* The running library's version as "MAJOR.MINOR.PATCH". Never NULL. */
THEUS_API const char *theus_version_string(void);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_VERSION_H */
